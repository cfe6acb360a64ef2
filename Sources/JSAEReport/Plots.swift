import Foundation

typealias RGB = (UInt8, UInt8, UInt8)
let jsaeColor: RGB = (31, 119, 180), tradColor: RGB = (255, 127, 14), gray: RGB = (120, 120, 120)

/// Plot area inside a canvas, mapping data coordinates to pixels.
struct Frame {
    var x0: Int, y0: Int, x1: Int, y1: Int          // pixel box (y0 top)
    var xmin: Double, xmax: Double, ymin: Double, ymax: Double
    func px(_ x: Double) -> Int { x0 + Int((x - xmin) / (xmax - xmin) * Double(x1 - x0)) }
    func py(_ y: Double) -> Int { y1 - Int((y - ymin) / (ymax - ymin) * Double(y1 - y0)) }

    func axes(_ c: inout Canvas, xTicks: [Double], yTicks: [Double], xFormat: (Double) -> String, yFormat: (Double) -> String,
              xLabel: String, yLabel: String, title: String) {
        c.line(x0, y1, x1, y1, (0, 0, 0)); c.line(x0, y0, x0, y1, (0, 0, 0))
        for t in xTicks {
            let x = px(t); c.line(x, y1, x, y1 + 5, (0, 0, 0))
            let s = xFormat(t); c.text(s, x - Canvas.textWidth(s) / 2, y1 + 9)
        }
        for t in yTicks {
            let y = py(t); c.line(x0 - 5, y, x0, y, (0, 0, 0)); c.line(x0 + 1, y, x1, y, (230, 230, 230))
            let s = yFormat(t); c.text(s, x0 - 8 - Canvas.textWidth(s), y - 7)
        }
        c.text(xLabel, (x0 + x1) / 2 - Canvas.textWidth(xLabel) / 2, y1 + 32)
        c.text(yLabel, 8, y0 - 26)
        c.text(title, (x0 + x1) / 2 - Canvas.textWidth(title) / 2, 10)
    }
}

func legend(_ c: inout Canvas, _ items: [(String, RGB)], x: Int, y: Int) {
    for (i, (name, color)) in items.enumerated() {
        c.fill(x, y + i * 22, x + 14, y + i * 22 + 14, color)
        c.text(name, x + 22, y + i * 22)
    }
}

enum Plots {
    /// log10 |J| histogram (left) and CDF of |J| (right), one curve per series.
    static func jacobianDistribution(_ series: [(String, RGB, [Double])], title: String) -> Data {
        var c = Canvas(width: 1100, height: 460)
        let lo = -5.0, hi = 1.0, bins = 60
        var hists: [[Double]] = []
        for (_, _, v) in series {
            var h = [Double](repeating: 0, count: bins)
            for a in v {
                let l = a > 0 ? log10(a) : lo
                h[min(bins - 1, max(0, Int((min(max(l, lo), hi - 1e-9) - lo) / (hi - lo) * Double(bins))))] += 1
            }
            hists.append(h.map { $0 / Double(max(v.count, 1)) })
        }
        let ymax = max(hists.flatMap { $0 }.max() ?? 1, 1e-9) * 1.1
        let f1 = Frame(x0: 90, y0: 60, x1: 520, y1: 380, xmin: lo, xmax: hi, ymin: 0, ymax: ymax)
        f1.axes(&c, xTicks: stride(from: lo, through: hi, by: 1).map { $0 }, yTicks: [0, ymax / 2, ymax / 1.1],
                xFormat: { String(Int($0)) }, yFormat: { String(format: "%.2f", $0) },
                xLabel: "LOG10 |J|", yLabel: "SHARE OF ENTRIES", title: title)
        for ((_, color, _), h) in zip(series, hists) {
            for b in 0..<bins {
                let xa = f1.px(lo + Double(b) * (hi - lo) / Double(bins)), xb = f1.px(lo + Double(b + 1) * (hi - lo) / Double(bins))
                c.line(xa, f1.py(h[b]), xb, f1.py(h[b]), color, thick: 2)
                if b + 1 < bins { c.line(xb, f1.py(h[b]), xb, f1.py(h[b + 1]), color, thick: 2) }
            }
        }
        let f2 = Frame(x0: 640, y0: 60, x1: 1070, y1: 380, xmin: lo, xmax: hi, ymin: 0, ymax: 1)
        f2.axes(&c, xTicks: stride(from: lo, through: hi, by: 1).map { $0 }, yTicks: [0, 0.25, 0.5, 0.75, 1],
                xFormat: { String(Int($0)) }, yFormat: { String(format: "%.2f", $0) },
                xLabel: "LOG10 |J|", yLabel: "", title: "")
        c.text("CDF", 660, 44)
        for (_, color, v) in series {
            let s = v.sorted()
            var prev: (Int, Int)? = nil
            for i in stride(from: 0, to: 301, by: 1) {
                let l = lo + Double(i) * (hi - lo) / 300
                let t = pow(10, l)
                var a = 0, b = s.count
                while a < b { let m = (a + b) / 2; if s[m] <= t { a = m + 1 } else { b = m } }
                let p = (f2.px(l), f2.py(Double(a) / Double(max(s.count, 1))))
                if let q = prev { c.line(q.0, q.1, p.0, p.1, color, thick: 2) }
                prev = p
            }
        }
        // The paper's threshold |J| = 0.01.
        for f in [f1, f2] { let x = f.px(-2); for y in stride(from: f.y0, to: f.y1, by: 6) { c.line(x, y, x, y + 2, gray) } }
        legend(&c, series.map { ($0.0, $0.1) }, x: 100, y: 70)
        return c.png()
    }

    /// Grouped bars of shares (0…1), labelled in percent.
    static func groupedBars(_ groups: [(String, [(String, RGB, Double)])], title: String, yLabel: String) -> Data {
        var c = Canvas(width: 760, height: 460)
        let ymax = max(groups.flatMap { $0.1.map(\.2) }.max() ?? 1, 0.01) * 1.15
        let f = Frame(x0: 90, y0: 60, x1: 730, y1: 380, xmin: 0, xmax: Double(groups.count), ymin: 0, ymax: ymax)
        f.axes(&c, xTicks: [], yTicks: [0, ymax / 2, ymax / 1.15], xFormat: { _ in "" },
               yFormat: { String(format: "%.0f%%", 100 * $0) }, xLabel: "", yLabel: yLabel, title: title)
        for (g, (label, bars)) in groups.enumerated() {
            let w = (f.x1 - f.x0) / groups.count
            let left = f.x0 + g * w + w / 8, bw = (w * 3 / 4) / max(bars.count, 1)
            for (i, (_, color, v)) in bars.enumerated() {
                c.fill(left + i * bw + 2, f.py(v), left + (i + 1) * bw - 2, f.y1 - 1, color)
                let s = String(format: "%.1f%%", 100 * v)
                c.text(s, left + i * bw + bw / 2 - Canvas.textWidth(s) / 2, f.py(v) - 18)
            }
            c.text(label, f.x0 + g * w + w / 2 - Canvas.textWidth(label) / 2, f.y1 + 12)
        }
        if let first = groups.first { legend(&c, first.1.map { ($0.0, $0.1) }, x: 480, y: 70) }
        return c.png()
    }

    /// Points (x, y) with labels: Jacobian sparsity against reconstruction quality.
    static func scatter(_ points: [(String, Double, Double)], title: String, xLabel: String, yLabel: String) -> Data {
        var c = Canvas(width: 760, height: 460)
        let xs = points.map(\.1), ys = points.map(\.2)
        // Axes fitted to the data (at least 2 points of range), padded by 15%.
        func range(_ v: [Double]) -> (Double, Double) {
            let lo = v.min() ?? 0, hi = v.max() ?? 1, span = max(hi - lo, 0.02)
            return (lo - 0.15 * span, hi + 0.15 * span)
        }
        let (xmin, xmax) = range(xs), (ymin, ymax) = range(ys)
        let f = Frame(x0: 90, y0: 60, x1: 730, y1: 380, xmin: xmin, xmax: xmax, ymin: ymin, ymax: ymax)
        let xt = (0..<4).map { xmin + (xmax - xmin) * (0.1 + 0.8 * Double($0) / 3) }
        let yt = (0..<4).map { ymin + (ymax - ymin) * (0.1 + 0.8 * Double($0) / 3) }
        f.axes(&c, xTicks: xt, yTicks: yt, xFormat: { String(format: "%.1f%%", 100 * $0) }, yFormat: { String(format: "%.3f", $0) },
               xLabel: xLabel, yLabel: yLabel, title: title)
        var prev: (Int, Int)? = nil
        for (i, (label, x, y)) in points.enumerated() {
            let p = (f.px(x), f.py(y))
            if let q = prev { c.line(q.0, q.1, p.0, p.1, gray) }
            c.fill(p.0 - 4, p.1 - 4, p.0 + 4, p.1 + 4, jsaeColor)
            c.text(label, p.0 - Canvas.textWidth(label) / 2, i % 2 == 0 ? p.1 - 24 : p.1 + 10)
            prev = p
        }
        return c.png()
    }

    /// Lines over a log10 x axis (training tokens), one per series, with
    /// optional reference points (the paper's endpoint) drawn as hollow
    /// squares with their label.
    static func lines(_ series: [(String, RGB, [(Double, Double)])], references: [(String, RGB, Double, Double)] = [],
                      title: String, xLabel: String, yLabel: String, percent: Bool, logX: Bool = true) -> Data {
        var c = Canvas(width: 860, height: 460)
        let tx = { (x: Double) in logX ? log10(x) : x }
        let xs = series.flatMap { $0.2.map(\.0) } + references.map(\.2)
        let ys = series.flatMap { $0.2.map(\.1) } + references.map(\.3)
        let lx = xs.filter { !logX || $0 > 0 }.map(tx)
        let xmin = logX ? floor((lx.min() ?? 5) * 2) / 2 - 0.1 : (lx.min() ?? 0) - 0.5
        let xmax = logX ? ceil((lx.max() ?? 6) * 2) / 2 + 0.1 : (lx.max() ?? 1) + 0.5
        let ylo = min(ys.min() ?? 0, 0), yhi = max(ys.max() ?? 1, 1e-3)
        let ymin = ylo - 0.05 * (yhi - ylo), ymax = yhi + 0.12 * (yhi - ylo)
        let f = Frame(x0: 100, y0: 60, x1: 830, y1: 380, xmin: xmin, xmax: xmax, ymin: ymin, ymax: ymax)
        let xt = logX ? stride(from: ceil(xmin * 2) / 2, through: xmax, by: 0.5).map { $0 } : stride(from: ceil(xmin), through: xmax, by: 1).map { $0 }
        let yt = (0..<5).map { ylo + (yhi - ylo) * Double($0) / 4 }
        f.axes(&c, xTicks: xt, yTicks: yt, xFormat: { v in
                   guard logX else { return String(Int(v)) }
                   let t = pow(10, v)
                   return t >= 1e6 ? String(format: "%gM", (t / 1e6 * 100).rounded() / 100) : String(format: "%gK", (t / 1e3).rounded())
               },
               yFormat: { percent ? String(format: "%.0f%%", 100 * $0) : String(format: "%.2f", $0) },
               xLabel: xLabel, yLabel: yLabel, title: title)
        for (_, color, points) in series {
            var prev: (Int, Int)? = nil
            for (x, y) in points where !logX || x > 0 {
                let p = (f.px(tx(x)), f.py(y))
                if let q = prev { c.line(q.0, q.1, p.0, p.1, color, thick: 2) }
                c.fill(p.0 - 3, p.1 - 3, p.0 + 3, p.1 + 3, color)
                prev = p
            }
        }
        for (label, color, x, y) in references where !logX || x > 0 {
            let p = (f.px(tx(x)), f.py(y))
            c.line(p.0 - 6, p.1 - 6, p.0 + 6, p.1 - 6, color, thick: 2); c.line(p.0 - 6, p.1 + 6, p.0 + 6, p.1 + 6, color, thick: 2)
            c.line(p.0 - 6, p.1 - 6, p.0 - 6, p.1 + 6, color, thick: 2); c.line(p.0 + 6, p.1 - 6, p.0 + 6, p.1 + 6, color, thick: 2)
            c.text(label, p.0 - Canvas.textWidth(label) - 10, p.1 - 7)
        }
        legend(&c, series.map { ($0.0, $0.1) }, x: 110, y: 70)
        return c.png()
    }
}
