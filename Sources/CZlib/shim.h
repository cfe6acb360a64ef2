// zlib (compress2/uncompress) for the report's PNG plots.
#include <zlib.h>
