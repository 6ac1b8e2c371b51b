/* PNG writer over libpng (see png.h). ASCII text goes into tEXt (what most readers look at), other
 * UTF-8 into iTXt. libpng reports errors by longjmp; every libpng call here sits
 * after the setjmp, and the error handler keeps the message for qd_fail. */
#include "io/png.h"

#include <png.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

typedef struct {
    jmp_buf jump;
    char message[200];
} png_err;

static void on_error(png_structp p, png_const_charp msg) {
    png_err *e = png_get_error_ptr(p);
    snprintf(e->message, sizeof e->message, "%s", msg);
    longjmp(e->jump, 1);
}

static void on_warning(png_structp p, png_const_charp msg) { (void)p, (void)msg; }

/* the libpng part alone, so its setjmp frame holds no locals that change after it */
static int write_png(FILE *f, png_err *err, int64_t width, int64_t height, const uint8_t *rgb, const qd_png_text *texts,
                     size_t n_texts) {
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, on_error, on_warning);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    png_textp t = calloc(n_texts ? n_texts : 1, sizeof *t);
    if (!p || !info || !t) {
        snprintf(err->message, sizeof err->message, "out of memory");
        png_destroy_write_struct(&p, &info);
        free(t);
        return 1;
    }
    if (setjmp(err->jump)) {
        png_destroy_write_struct(&p, &info);
        free(t);
        return 1;
    }
    png_init_io(p, f);
    png_set_IHDR(p, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (size_t i = 0; i < n_texts; i++) {
        bool ascii = true;
        for (const char *c = texts[i].text; *c && ascii; c++) ascii = (unsigned char)*c < 0x80;
        t[i].compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
        t[i].key = (png_charp)texts[i].key;
        t[i].text = (png_charp)texts[i].text;
        t[i].text_length = ascii ? strlen(texts[i].text) : 0;
        t[i].itxt_length = ascii ? 0 : strlen(texts[i].text);
    }
    if (n_texts) png_set_text(p, info, t, (int)n_texts);
    png_write_info(p, info);
    for (int64_t y = 0; y < height; y++) png_write_row(p, (png_const_bytep)(rgb + (size_t)y * (size_t)width * 3));
    png_write_end(p, info);
    png_destroy_write_struct(&p, &info);
    free(t);
    return 0;
}

qd_status qd_png_write_rgb8(const char *path, int64_t width, int64_t height, const uint8_t *rgb, const qd_png_text *texts,
                            size_t n_texts) {
    if (width < 1 || height < 1 || width > 0x7fffffff / 3 || height > 0x7fffffff) {
        return qd_fail(QD_EINVAL, "%s: a PNG of %lld x %lld pixels cannot be written", path, (long long)width, (long long)height);
    }
    for (size_t i = 0; i < n_texts; i++) {
        size_t n = strlen(texts[i].key);
        if (n < 1 || n > 79) return qd_fail(QD_EINVAL, "%s: PNG text key '%s' must be 1 to 79 bytes", path, texts[i].key);
    }
    size_t n = strlen(path);
    char *tmp = malloc(n + 5);
    if (!tmp) return qd_fail(QD_ENOMEM, "cannot allocate");
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        qd_status s = qd_fail(QD_EIO, "%s: cannot create the image file", tmp);
        free(tmp);
        return s;
    }
    png_err err = {.message = ""};
    int bad = write_png(f, &err, width, height, rgb, texts, n_texts);
    bad |= fclose(f) != 0;
    qd_status s = QD_OK;
    if (bad) s = qd_fail(QD_EIO, "%s: writing the PNG failed%s%s", path, err.message[0] ? ": " : "", err.message);
    else if (rename(tmp, path)) s = qd_fail(QD_EIO, "%s: cannot move the image into place", path);
    if (s) remove(tmp);
    free(tmp);
    return s;
}
