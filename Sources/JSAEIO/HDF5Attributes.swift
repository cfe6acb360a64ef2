import CHDF5
import JSAECore
import Foundation

extension HDF5File {
    // MARK: Attributes

    /// Names of the attributes on an object (root by default).
    public func attributeNames(on object: String = "/") -> [String] {
        let oid = H5Oopen(id, object, jsae_h5p_default())
        guard oid >= 0 else { return [] }
        defer { H5Oclose(oid) }
        let n = min(Int(H5Aget_num_attrs(oid)), 4096)   // a corrupted header may claim any count
        var names: [String] = []
        for i in 0..<max(n, 0) {
            let aid = H5Aopen_by_idx(oid, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, hsize_t(i), jsae_h5p_default(), jsae_h5p_default())
            let aid2 = aid >= 0 ? aid : H5Aopen_by_idx(oid, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(i), jsae_h5p_default(), jsae_h5p_default())
            guard aid2 >= 0 else { continue }
            let len = H5Aget_name(aid2, 0, nil)
            guard len >= 0 && len < 65536 else { H5Aclose(aid2); continue }
            var buf = [CChar](repeating: 0, count: Int(len) + 1)
            H5Aget_name(aid2, Int(len) + 1, &buf)
            names.append(cStringToString(buf))
            H5Aclose(aid2)
        }
        return names.sorted()
    }

    /// Reads a scalar attribute (integer, float or string), or nil if absent.
    public func attribute(_ name: String, on object: String = "/") throws -> AttributeValue? {
        path.withCString { jsae_guard_set_file($0) }
        guard H5Aexists_by_name(id, object, name, jsae_h5p_default()) > 0 else { return nil }
        let aid = H5Aopen_by_name(id, object, name, jsae_h5p_default(), jsae_h5p_default())
        guard aid >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be opened") }
        defer { H5Aclose(aid) }
        let tid = H5Aget_type(aid)
        defer { H5Tclose(tid) }
        let sid = H5Aget_space(aid)
        defer { H5Sclose(sid) }
        let npoints = H5Sget_simple_extent_npoints(sid)
        guard npoints == 1 else { throw JSAEError(file: path, "attribute \(name) holds \(npoints) values, expected one") }
        switch H5Tget_class(tid) {
        case H5T_INTEGER:
            var v: Int64 = 0
            guard H5Aread(aid, jsae_h5t_native_int64(), &v) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
            return .int(Int(v))
        case H5T_FLOAT:
            var v: Double = 0
            guard H5Aread(aid, jsae_h5t_native_double(), &v) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
            return .double(v)
        case H5T_STRING:
            if H5Tis_variable_str(tid) > 0 {
                let mt = H5Tcopy(jsae_h5t_c_s1())
                defer { H5Tclose(mt) }
                H5Tset_size(mt, jsae_h5t_variable())
                H5Tset_cset(mt, H5Tget_cset(tid))
                var p: UnsafeMutablePointer<CChar>? = nil
                guard H5Aread(aid, mt, &p) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
                defer { if let p { H5free_memory(p) } }
                return .string(p.map { String(cString: $0) } ?? "")
            } else {
                let size = Int(H5Tget_size(tid))
                guard size > 0 && size <= 1 << 20 else { throw JSAEError(file: path, "attribute \(name) declares a string of \(size) bytes (corrupt?)") }
                var buf = [CChar](repeating: 0, count: size + 1)
                let mt = H5Tcopy(tid)
                defer { H5Tclose(mt) }
                guard H5Aread(aid, mt, &buf) >= 0 else { throw JSAEError(file: path, "attribute \(name) cannot be read") }
                return .string(cStringToString(buf))
            }
        default:
            throw JSAEError(file: path, "attribute \(name) has an unsupported type")
        }
    }

    /// Writes (replacing) a scalar attribute. Strings are variable-length
    /// UTF-8, as h5py writes a Python str.
    public func setAttribute(_ name: String, _ value: AttributeValue, on object: String = "/") throws {
        if H5Aexists_by_name(id, object, name, jsae_h5p_default()) > 0 {
            guard H5Adelete_by_name(id, object, name, jsae_h5p_default()) >= 0 else { throw writeError("cannot replace attribute \(name)") }
        }
        let sid = H5Screate(H5S_SCALAR)
        defer { H5Sclose(sid) }
        var status: herr_t = -1
        switch value {
        case .int(let v):
            let aid = H5Acreate_by_name(id, object, name, jsae_h5t_std_i64le(), sid, jsae_h5p_default(), jsae_h5p_default(), jsae_h5p_default())
            var x = Int64(v)
            if aid >= 0 { status = H5Awrite(aid, jsae_h5t_native_int64(), &x); if H5Aclose(aid) < 0 { status = -1 } }
        case .double(let v):
            let aid = H5Acreate_by_name(id, object, name, jsae_h5t_ieee_f64le(), sid, jsae_h5p_default(), jsae_h5p_default(), jsae_h5p_default())
            var x = v
            if aid >= 0 { status = H5Awrite(aid, jsae_h5t_native_double(), &x); if H5Aclose(aid) < 0 { status = -1 } }
        case .string(let v):
            let tid = H5Tcopy(jsae_h5t_c_s1())
            defer { H5Tclose(tid) }
            H5Tset_size(tid, jsae_h5t_variable())
            H5Tset_cset(tid, H5T_CSET_UTF8)
            let aid = H5Acreate_by_name(id, object, name, tid, sid, jsae_h5p_default(), jsae_h5p_default(), jsae_h5p_default())
            if aid >= 0 {
                status = v.withCString { cs -> herr_t in
                    var p: UnsafePointer<CChar>? = cs
                    return H5Awrite(aid, tid, &p)
                }
                if H5Aclose(aid) < 0 { status = -1 }
            }
        }
        guard status >= 0 else { throw writeError("cannot write attribute \(name)") }
    }

    // MARK: Typed attribute helpers

    public func intAttribute(_ name: String) throws -> Int? {
        switch try attribute(name) {
        case nil: return nil
        case .int(let v): return v
        // A float is accepted only when it is a whole number an Int can hold
        // (h5py may store 5.0); 1e300, inf and NaN are refused here, before
        // any conversion could trap.
        case .double(let v) where v.isFinite && v == v.rounded() && abs(v) < 9.0e18: return Int(v)
        case .double(let v): throw JSAEError(file: path, "root attribute \(name) is \(v), expected an integer (between -9e18 and 9e18)")
        default: throw JSAEError(file: path, "root attribute \(name) must be an integer")
        }
    }

    public func doubleAttribute(_ name: String) throws -> Double? {
        switch try attribute(name) {
        case nil: return nil
        case .int(let v): return Double(v)
        case .double(let v): return v
        case .string: throw JSAEError(file: path, "root attribute \(name) must be a number")
        }
    }

    public func stringAttribute(_ name: String) throws -> String? {
        switch try attribute(name) {
        case nil: return nil
        case .string(let s): return s
        default: throw JSAEError(file: path, "root attribute \(name) must be a string")
        }
    }
}
