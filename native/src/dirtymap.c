/* BlockMigrate dirty map: the file itself -- creating, opening, validating,
 * closing, the header's plain settings and the layout self-description.
 * Bits live in bitmap.c, the freeze handshake and waiting in freeze.c, the
 * destination gate in gate.c.
 *
 * The map is a small file in /dev/shm mapped MAP_SHARED by the nbdkit filter
 * (one process, many threads) and by the orchestrator (another process).  No
 * lock is shared between them: everything that changes after creation is a
 * naturally aligned word changed with __atomic builtins, and the geometry is
 * copied into the process-private struct bm_map once validated, so a process
 * that scribbles on the shared header later cannot make us index outside the
 * mapping.
 *
 * Creation must be atomic because several nbdkit processes (and the
 * orchestrator) may race to create the same map: the file is built completely
 * under a temporary name and then link()ed into place, which fails instead of
 * replacing a map somebody else created first.  A reader therefore never sees
 * a half-written header.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define PAGE 4096u

/* ---- errors ------------------------------------------------------------ */

static __thread char last_error[1024];

int
bm__error (const char *fmt, ...)
{
  int saved = errno;
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (last_error, sizeof last_error, fmt, ap);
  va_end (ap);
  errno = saved;
  return -1;
}

BM_API const char *
bm_last_error (void)
{
  return last_error;
}

uint64_t
bm__now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* ---- geometry ---------------------------------------------------------- */

BM_API int
bm_valid_block_size (uint64_t block_size)
{
  return block_size >= BM_MIN_BLOCK_SIZE && block_size <= BM_MAX_BLOCK_SIZE &&
    (block_size & (block_size - 1)) == 0;
}

static unsigned
log2_u32 (uint32_t v)
{
  return (unsigned) __builtin_ctz (v);
}

static uint64_t
round_up (uint64_t v, uint64_t to)
{
  return (v + to - 1) / to * to;
}

/* Expected block and word counts for an export. */
static void
geometry (uint64_t image_size, uint32_t block_size,
          uint64_t *blocks, uint64_t *words)
{
  *blocks = image_size / block_size + (image_size % block_size != 0);
  *words = *blocks / 64 + (*blocks % 64 != 0);
}

/* Check a header read from PATH whose file is file_size bytes long.
 * On success *need is the number of bytes to map. */
static int
validate_header (const char *path, const struct bm_header *h,
                 uint64_t file_size, uint64_t *need)
{
  uint64_t blocks, words, bytes;

  if (memcmp (h->magic, BM_MAGIC, 8) != 0)
    return bm__error ("dirty map %s: not a dirty map (bad magic)", path);
  if (h->byte_order != BM_BYTE_ORDER) {
    if (h->byte_order == __builtin_bswap32 (BM_BYTE_ORDER))
      return bm__error ("dirty map %s: created on a host of the other byte order",
                        path);
    return bm__error ("dirty map %s: corrupt header (byte order mark 0x%08x)",
                      path, h->byte_order);
  }
  if (h->version != BM_VERSION)
    return bm__error ("dirty map %s: version %u, this library reads version %u",
                      path, h->version, BM_VERSION);
  if (h->header_size != BM_HEADER_SIZE)
    return bm__error ("dirty map %s: corrupt header (header_size %u, expected %u)",
                      path, h->header_size, BM_HEADER_SIZE);
  if (!bm_valid_block_size (h->block_size))
    return bm__error ("dirty map %s: corrupt header (block size %u is not a power "
                      "of two between %u and %u)", path, h->block_size,
                      BM_MIN_BLOCK_SIZE, BM_MAX_BLOCK_SIZE);
  if (h->image_size > (uint64_t) INT64_MAX)
    return bm__error ("dirty map %s: corrupt header (image size %" PRIu64 ")",
                      path, h->image_size);
  geometry (h->image_size, h->block_size, &blocks, &words);
  if (h->blocks != blocks || h->bitmap_words != words)
    return bm__error ("dirty map %s: corrupt header (%" PRIu64 " blocks in %"
                      PRIu64 " words, but %" PRIu64 " bytes of %u-byte blocks "
                      "need %" PRIu64 " blocks in %" PRIu64 " words)",
                      path, h->blocks, h->bitmap_words, h->image_size,
                      h->block_size, blocks, words);
  bytes = words * 8;
  /* Both bitmaps after the header (a gate bitmap over the header would let
   * gate marks scribble on magic, geometry and state), 8-byte aligned, inside
   * the file and apart (found by native/fuzz). */
  if (h->dirty_offset < h->header_size || h->dirty_offset % 8 != 0 ||
      h->gate_offset < h->header_size || h->gate_offset % 8 != 0 ||
      h->dirty_offset > file_size || h->gate_offset > file_size ||
      (h->gate_offset < h->dirty_offset + bytes &&
       h->dirty_offset < h->gate_offset + bytes))
    return bm__error ("dirty map %s: corrupt header (bitmaps at %" PRIu64
                      " and %" PRIu64 ")", path, h->dirty_offset, h->gate_offset);
  *need = h->gate_offset > h->dirty_offset ? h->gate_offset + bytes
                                           : h->dirty_offset + bytes;
  if (*need < BM_HEADER_SIZE)
    *need = BM_HEADER_SIZE;
  if (file_size < *need)
    return bm__error ("dirty map %s: file is %" PRIu64 " bytes, its header "
                      "needs %" PRIu64, path, file_size, *need);
  return 0;
}

/* Validate and map an open map file; takes ownership of fd. */
static bm_map *
map_fd (const char *path, int fd)
{
  struct bm_header h;
  struct stat st;
  uint64_t need = 0;
  ssize_t r;
  bm_map *map;

  if (fstat (fd, &st) == -1) {
    bm__error ("dirty map %s: fstat: %s", path, strerror (errno));
    goto fail;
  }
  if (!S_ISREG (st.st_mode)) {
    errno = EINVAL;
    bm__error ("dirty map %s: not a regular file", path);
    goto fail;
  }
  if ((uint64_t) st.st_size < sizeof h) {
    errno = EINVAL;
    bm__error ("dirty map %s: file is %jd bytes, too short to be a dirty map",
               path, (intmax_t) st.st_size);
    goto fail;
  }
  r = pread (fd, &h, sizeof h, 0);
  if (r != (ssize_t) sizeof h) {
    if (r >= 0) errno = EIO;
    bm__error ("dirty map %s: reading header: %s", path, strerror (errno));
    goto fail;
  }
  if (validate_header (path, &h, (uint64_t) st.st_size, &need) == -1) {
    errno = EINVAL;
    goto fail;
  }

  map = calloc (1, sizeof *map);
  if (map == NULL) {
    bm__error ("dirty map %s: %s", path, strerror (errno));
    goto fail;
  }
  snprintf (map->path, sizeof map->path, "%s", path);
  map->fd = fd;
  map->length = need;
  map->base = mmap (NULL, need, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map->base == MAP_FAILED) {
    bm__error ("dirty map %s: mmap: %s", path, strerror (errno));
    free (map);
    goto fail;
  }
  map->hdr = map->base;
  map->dirty = (uint64_t *) ((char *) map->base + h.dirty_offset);
  map->gate = (uint64_t *) ((char *) map->base + h.gate_offset);
  map->image_size = h.image_size;
  map->blocks = h.blocks;
  map->words = h.bitmap_words;
  map->block_size = h.block_size;
  map->block_shift = log2_u32 (h.block_size);
  return map;

 fail:;
  int saved = errno;
  close (fd);
  errno = saved;
  return NULL;
}

BM_API bm_map *
bm_map_open (const char *path)
{
  int fd;

  if (path == NULL || *path == '\0') {
    errno = EINVAL;
    bm__error ("dirty map: no path given");
    return NULL;
  }
  fd = open (path, O_RDWR | O_CLOEXEC);
  if (fd == -1) {
    bm__error ("dirty map %s: %s", path, strerror (errno));
    return NULL;
  }
  return map_fd (path, fd);
}

/* mkdir -p of the directory holding path. */
static int
make_parent (const char *path)
{
  char dir[BM_PATH_MAX];
  char *p;

  if (snprintf (dir, sizeof dir, "%s", path) >= (int) sizeof dir) {
    errno = ENAMETOOLONG;
    return bm__error ("dirty map %s: path too long", path);
  }
  p = strrchr (dir, '/');
  if (p == NULL || p == dir)
    return 0;
  *p = '\0';
  for (p = dir + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (mkdir (dir, 0755) == -1 && errno != EEXIST)
        return bm__error ("dirty map %s: creating directory %s: %s",
                          path, dir, strerror (errno));
      *p = c;
      if (c == '\0')
        break;
    }
  }
  return 0;
}

BM_API bm_map *
bm_map_create (const char *path, uint64_t image_size, uint32_t block_size)
{
  char tmp[BM_PATH_MAX];
  static unsigned counter;
  struct bm_header h;
  uint64_t bytes, size;
  int fd;

  if (path == NULL || *path == '\0') {
    errno = EINVAL;
    bm__error ("dirty map: no path given");
    return NULL;
  }
  if (!bm_valid_block_size (block_size)) {
    errno = EINVAL;
    bm__error ("dirty map %s: block size %u is not a power of two between %u "
               "and %u", path, block_size, BM_MIN_BLOCK_SIZE, BM_MAX_BLOCK_SIZE);
    return NULL;
  }
  if (image_size > (uint64_t) INT64_MAX) {
    errno = EINVAL;
    bm__error ("dirty map %s: image size %" PRIu64 " too large", path, image_size);
    return NULL;
  }
  if (make_parent (path) == -1)
    return NULL;

  memset (&h, 0, sizeof h);
  memcpy (h.magic, BM_MAGIC, 8);
  h.version = BM_VERSION;
  h.header_size = BM_HEADER_SIZE;
  h.byte_order = BM_BYTE_ORDER;
  h.block_size = block_size;
  h.image_size = image_size;
  geometry (image_size, block_size, &h.blocks, &h.bitmap_words);
  bytes = round_up (h.bitmap_words * 8, PAGE);
  h.dirty_offset = BM_HEADER_SIZE;
  h.gate_offset = BM_HEADER_SIZE + bytes;
  h.created_unix = (uint64_t) time (NULL);
  size = h.gate_offset + bytes;

  if (snprintf (tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long) getpid (),
                __atomic_fetch_add (&counter, 1, __ATOMIC_RELAXED))
      >= (int) sizeof tmp) {
    errno = ENAMETOOLONG;
    bm__error ("dirty map %s: path too long", path);
    return NULL;
  }
  fd = open (tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
  if (fd == -1) {
    bm__error ("dirty map %s: creating %s: %s", path, tmp, strerror (errno));
    return NULL;
  }
  if (ftruncate (fd, (off_t) size) == -1) {
    bm__error ("dirty map %s: allocating %" PRIu64 " bytes: %s",
               path, size, strerror (errno));
    goto fail;
  }
  if (pwrite (fd, &h, sizeof h, 0) != (ssize_t) sizeof h) {
    bm__error ("dirty map %s: writing header: %s", path, strerror (errno));
    goto fail;
  }
  /* Publish the finished file; link() refuses to replace an existing map. */
  if (link (tmp, path) == -1) {
    bm__error ("dirty map %s: %s", path,
               errno == EEXIST ? "already exists" : strerror (errno));
    goto fail;
  }
  unlink (tmp);
  return map_fd (path, fd);

 fail:;
  int saved = errno;
  unlink (tmp);
  close (fd);
  errno = saved;
  return NULL;
}

BM_API bm_map *
bm_map_open_or_create (const char *path, uint64_t image_size, uint32_t block_size)
{
  uint64_t blocks, words;
  bm_map *map;
  int tries;

  if (!bm_valid_block_size (block_size)) {
    errno = EINVAL;
    bm__error ("dirty map %s: block size %u is not a power of two between %u "
               "and %u", path ? path : "", block_size, BM_MIN_BLOCK_SIZE,
               BM_MAX_BLOCK_SIZE);
    return NULL;
  }
  /* Another process may create the map between our open and our create
   * (then link fails with EEXIST and we open its map) or, in theory, delete
   * it again; a few rounds settle either race. */
  for (tries = 0; tries < 3; tries++) {
    map = bm_map_open (path);
    if (map == NULL && errno == ENOENT)
      map = bm_map_create (path, image_size, block_size);
    if (map != NULL || (errno != EEXIST && errno != ENOENT))
      break;
  }
  if (map == NULL)
    return NULL;

  geometry (image_size, block_size, &blocks, &words);
  if (map->blocks != blocks || map->block_size != block_size) {
    bm__error ("dirty map %s: geometry mismatch: map has %" PRIu64 " blocks of "
               "%u bytes, export needs %" PRIu64 " blocks of %u bytes",
               path, map->blocks, map->block_size, blocks, block_size);
    bm_map_close (map);
    errno = EINVAL;
    return NULL;
  }
  if (map->image_size != image_size) {
    bm__error ("dirty map %s: geometry mismatch: map is for %" PRIu64
               " bytes, export is %" PRIu64 " bytes",
               path, map->image_size, image_size);
    bm_map_close (map);
    errno = EINVAL;
    return NULL;
  }
  return map;
}

BM_API void
bm_map_close (bm_map *map)
{
  if (map == NULL)
    return;
  munmap (map->base, map->length);
  close (map->fd);
  free (map);
}

/* ---- reading ----------------------------------------------------------- */

#define LOAD(field) __atomic_load_n (&map->hdr->field, __ATOMIC_SEQ_CST)

int64_t
bm__popcount_words (const uint64_t *bitmap, uint64_t words)
{
  int64_t n = 0;
  uint64_t i;

  for (i = 0; i < words; i++)
    n += __builtin_popcountll (__atomic_load_n (&bitmap[i], __ATOMIC_RELAXED));
  return n;
}

BM_API int
bm_map_info (bm_map *map, struct bm_info *out)
{
  if (map == NULL || out == NULL) {
    errno = EINVAL;
    return bm__error ("bm_map_info: null argument");
  }
  memset (out, 0, sizeof *out);
  out->version = map->hdr->version;
  out->block_size = map->block_size;
  out->image_size = map->image_size;
  out->blocks = map->blocks;
  out->bitmap_words = map->words;
  out->state = LOAD (state);
  out->throttle_bps = LOAD (throttle_bps);
  out->writes = LOAD (writes);
  out->bytes_written = LOAD (bytes_written);
  out->throttled_ns = LOAD (throttled_ns);
  out->frozen_ns = LOAD (frozen_ns);
  out->gated_ns = LOAD (gated_ns);
  out->inflight = LOAD (inflight);
  out->owner_pid = LOAD (owner_pid);
  out->dirty_blocks = (uint64_t) bm__popcount_words (map->dirty, map->words);
  out->gated_blocks = (uint64_t) bm__popcount_words (map->gate, map->words);
  return 0;
}

/* ---- throttle setting, owner, cookie, flags ------------------------------ */

BM_API int
bm_set_throttle (bm_map *map, uint64_t bytes_per_second)
{
  if (map == NULL) {
    errno = EINVAL;
    return bm__error ("bm_set_throttle: null map");
  }
  __atomic_store_n (&map->hdr->throttle_bps, bytes_per_second, __ATOMIC_SEQ_CST);
  return 0;
}

BM_API int
bm_set_owner (bm_map *map, uint64_t pid)
{
  if (map == NULL) {
    errno = EINVAL;
    return bm__error ("bm_set_owner: null map");
  }
  __atomic_store_n (&map->hdr->owner_pid, pid, __ATOMIC_SEQ_CST);
  return 0;
}

/* The cookie is written only by the orchestrator, before the filter or the
 * receiver needs it; it is copied bytewise, not atomically. */
BM_API int
bm_get_cookie (bm_map *map, uint8_t out[BM_COOKIE_SIZE])
{
  if (map == NULL || out == NULL) {
    errno = EINVAL;
    return bm__error ("bm_get_cookie: null argument");
  }
  memcpy (out, map->hdr->cookie, BM_COOKIE_SIZE);
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  return 0;
}

BM_API int
bm_set_cookie (bm_map *map, const uint8_t cookie[BM_COOKIE_SIZE])
{
  if (map == NULL || cookie == NULL) {
    errno = EINVAL;
    return bm__error ("bm_set_cookie: null argument");
  }
  memcpy (map->hdr->cookie, cookie, BM_COOKIE_SIZE);
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  return 0;
}

/* ---- layout self-description ------------------------------------------- */

BM_API size_t
bm_info_size (void)
{
  return sizeof (struct bm_info);
}

BM_API size_t
bm_header_struct_size (void)
{
  return sizeof (struct bm_header);
}

BM_API int64_t
bm_info_offset (const char *field)
{
  static const struct { const char *name; size_t offset; } fields[] = {
#define F(f) { #f, offsetof (struct bm_info, f) }
    F (version), F (block_size), F (image_size), F (blocks), F (bitmap_words),
    F (state), F (reserved), F (throttle_bps), F (writes), F (bytes_written),
    F (throttled_ns), F (frozen_ns), F (gated_ns), F (inflight), F (owner_pid),
    F (dirty_blocks), F (gated_blocks),
#undef F
  };
  size_t i;

  if (field == NULL)
    return -1;
  for (i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (strcmp (fields[i].name, field) == 0)
      return (int64_t) fields[i].offset;
  return -1;
}
