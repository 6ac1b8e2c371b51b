/* PNG output (libpng): 8-bit RGB images with tEXt chunks, as `qdit generate` writes them. */
#ifndef QD_IO_PNG_H
#define QD_IO_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "qdit.h"

typedef struct {
    const char *key;   /* Latin-1 keyword, 1..79 bytes */
    const char *text;  /* UTF-8: tEXt when ASCII, else iTXt (tEXt is Latin-1) */
} qd_png_text;

/* rgb: height rows of width·3 bytes. The file is written to path.tmp and renamed into place, so a failed
 * write leaves no partial PNG. */
qd_status qd_png_write_rgb8(const char *path, int64_t width, int64_t height, const uint8_t *rgb, const qd_png_text *texts,
                            size_t n_texts);

#endif
