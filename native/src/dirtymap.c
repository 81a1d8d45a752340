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
 *
 * Trust.  A map decides what the source sends and whether the VM's writes
 * wait, so only its owner may touch it: maps are created 0600, and a map is
 * used only when it is a regular file (opened with O_NOFOLLOW), owned by this
 * process's effective user, by root or by the service user "blockmigrate",
 * with no group or other permission bits.  Its directory is opened with
 * O_DIRECTORY|O_NOFOLLOW, must be owned by one of the same users and writable
 * by nobody else, and every name is then resolved with openat/linkat in that
 * very directory, so the directory checked is the one used.  A map that
 * shrinks under a process that has it mapped would kill it with SIGBUS; only
 * the owners above can truncate it, and every entry point re-checks the size
 * with fstat (bm__map_intact) before it touches the mapping, so a shrunken map
 * gives an error instead.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
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

/* ---- trust: who may own a map and its directory ------------------------- */

static uid_t service_uid = (uid_t) -1;
static pthread_once_t service_once = PTHREAD_ONCE_INIT;

static void
lookup_service_user (void)
{
  struct passwd pw, *res = NULL;
  char buf[1024];

  if (getpwnam_r (BM_SERVICE_USER, &pw, buf, sizeof buf, &res) == 0 && res)
    service_uid = pw.pw_uid;
}

/* Root, ourselves and the service user may own maps and their directory.
 * Exported: the orchestrator's own checks (C#) ask the same question. */
BM_API int
bm_trusted_owner (uint32_t uid)
{
  return bm__trusted_owner ((uid_t) uid);
}

int
bm__trusted_owner (uid_t uid)
{
  if (uid == 0 || uid == geteuid ())
    return 1;
  pthread_once (&service_once, lookup_service_user);
  return service_uid != (uid_t) -1 && uid == service_uid;
}

/* The open directory dfd (named dir) may hold maps. */
static int
check_dir (const char *path, const char *dir, int dfd)
{
  struct stat st;

  if (fstat (dfd, &st) == -1)
    return bm__error ("dirty map %s: directory %s: fstat: %s", path, dir,
                      strerror (errno));
  if (!S_ISDIR (st.st_mode)) {
    errno = ENOTDIR;
    return bm__error ("dirty map %s: %s is not a directory", path, dir);
  }
  if (!bm__trusted_owner (st.st_uid)) {
    errno = EPERM;
    return bm__error ("dirty map %s: directory %s is owned by uid %ju, not by "
                      "root, uid %ju or user " BM_SERVICE_USER "; refusing it "
                      "(chown root %s)", path, dir, (uintmax_t) st.st_uid,
                      (uintmax_t) geteuid (), dir);
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    errno = EPERM;
    return bm__error ("dirty map %s: directory %s is writable by group or "
                      "others (mode %04o); refusing it (chmod go-w %s)", path,
                      dir, (unsigned) (st.st_mode & 07777), dir);
  }
  return 0;
}

/* The open file fd may be used as a map: regular, trusted owner, 0600. */
static int
check_file (const char *path, int fd, struct stat *st)
{
  if (fstat (fd, st) == -1)
    return bm__error ("dirty map %s: fstat: %s", path, strerror (errno));
  if (!S_ISREG (st->st_mode)) {
    errno = EINVAL;
    return bm__error ("dirty map %s: not a regular file", path);
  }
  if (!bm__trusted_owner (st->st_uid)) {
    errno = EPERM;
    return bm__error ("dirty map %s: owned by uid %ju, not by root, uid %ju or "
                      "user " BM_SERVICE_USER "; refusing it", path,
                      (uintmax_t) st->st_uid, (uintmax_t) geteuid ());
  }
  if (st->st_mode & 077) {
    errno = EPERM;
    return bm__error ("dirty map %s: mode %04o gives group or others access; "
                      "refusing it (maps are 0600: chmod 600 %s)", path,
                      (unsigned) (st->st_mode & 07777), path);
  }
  return 0;
}

/* Is the file still as long as the mapping?  Every entry point calls this
 * before it touches the shared memory: an access past the end of a shrunken
 * file raises SIGBUS. */
int
bm__map_intact (bm_map *map)
{
  struct stat st;

  if (fstat (map->fd, &st) == -1)
    return bm__error ("dirty map %s: fstat: %s", map->path, strerror (errno));
  if ((uint64_t) st.st_size < map->length) {
    errno = EIO;
    return bm__error ("dirty map %s: shrank to %jd bytes under us (%zu mapped); "
                      "refusing to touch it", map->path, (intmax_t) st.st_size,
                      map->length);
  }
  return 0;
}

/* ---- argument checks of the entry points (internal.h) -------------------- */

int
bm__need_map (bm_map *map, const char *fn)
{
  if (map == NULL) {
    errno = EINVAL;
    return bm__error ("%s: null map", fn);
  }
  return 0;
}

int
bm__check_map (bm_map *map, const char *fn)
{
  if (bm__need_map (map, fn) == -1)
    return -1;
  return bm__map_intact (map);
}

int
bm__check_map_arg (bm_map *map, const void *arg, const char *fn)
{
  if (map == NULL || arg == NULL) {
    errno = EINVAL;
    return bm__error ("%s: null argument", fn);
  }
  return bm__map_intact (map);
}

int
bm__check_range (bm_map *map, const char *fn, uint64_t first, uint64_t n,
                 int words)
{
  uint64_t limit;

  if (bm__need_map (map, fn) == -1)
    return -1;
  limit = words ? map->words : map->blocks;
  if (first > limit || n > limit - first) {
    errno = ERANGE;
    return bm__error ("%s: dirty map %s: %s %" PRIu64 "..%" PRIu64
                      " outside %s %" PRIu64 " %s", fn, map->path,
                      words ? "words" : "blocks", first, first + n,
                      words ? "the bitmap of" : "the map's", limit,
                      words ? "words" : "blocks");
  }
  return bm__map_intact (map);
}

/* Split path into its directory and last component and open the directory
 * (O_DIRECTORY|O_NOFOLLOW), checked.  Returns the directory's fd. */
static int
open_dir_of (const char *path, char dir[BM_PATH_MAX], const char **name)
{
  const char *slash;
  int dfd;

  if (strlen (path) >= BM_PATH_MAX) {
    errno = ENAMETOOLONG;
    return bm__error ("dirty map %s: path too long", path);
  }
  slash = strrchr (path, '/');
  if (slash == NULL) {
    strcpy (dir, ".");
    *name = path;
  }
  else {
    size_t n = slash == path ? 1 : (size_t) (slash - path);
    memcpy (dir, path, n);
    dir[n] = '\0';
    *name = slash + 1;
  }
  if (**name == '\0' || strcmp (*name, ".") == 0 || strcmp (*name, "..") == 0) {
    errno = EINVAL;
    return bm__error ("dirty map %s: not a file name", path);
  }
  dfd = open (dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd == -1)
    return bm__error ("dirty map %s: directory %s: %s", path, dir,
                      errno == ELOOP || errno == ENOTDIR
                      ? "is a symbolic link or not a directory; refusing it"
                      : strerror (errno));
  if (check_dir (path, dir, dfd) == -1) {
    int saved = errno;
    close (dfd);
    errno = saved;
    return -1;
  }
  return dfd;
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

  if (check_file (path, fd, &st) == -1)
    goto fail;
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

/* The directory fd handed to an *_at function must pass the same checks as
 * one we open ourselves. */
static int
check_dirfd (const char *label, int dirfd)
{
  if (dirfd < 0) {
    errno = EBADF;
    return bm__error ("dirty map %s: no directory", label);
  }
  return check_dir (label, "of the map", dirfd);
}

static int
check_name (const char *label, const char *name)
{
  if (name == NULL || *name == '\0' || strchr (name, '/') != NULL ||
      strcmp (name, ".") == 0 || strcmp (name, "..") == 0) {
    errno = EINVAL;
    return bm__error ("dirty map %s: not a file name", label);
  }
  return 0;
}

BM_API bm_map *
bm_map_open_fd (int fd, const char *label)
{
  if (label == NULL)
    label = "(fd)";
  if (fd < 0) {
    errno = EBADF;
    bm__error ("dirty map %s: bad file descriptor", label);
    return NULL;
  }
  return map_fd (label, fd);
}

BM_API bm_map *
bm_map_open_at (int dirfd, const char *name, const char *label)
{
  int fd;

  if (label == NULL)
    label = name ? name : "";
  if (check_name (label, name) == -1 || check_dirfd (label, dirfd) == -1)
    return NULL;
  fd = openat (dirfd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd == -1) {
    bm__error ("dirty map %s: %s", label, errno == ELOOP
               ? "is a symbolic link; refusing to follow it" : strerror (errno));
    return NULL;
  }
  return map_fd (label, fd);
}

BM_API bm_map *
bm_map_open (const char *path)
{
  char dir[BM_PATH_MAX];
  const char *name;
  bm_map *map;
  int dfd, saved;

  if (path == NULL || *path == '\0') {
    errno = EINVAL;
    bm__error ("dirty map: no path given");
    return NULL;
  }
  dfd = open_dir_of (path, dir, &name);
  if (dfd == -1)
    return NULL;
  map = bm_map_open_at (dfd, name, path);
  saved = errno;
  close (dfd);
  errno = saved;
  return map;
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

/* The path form of a *_at function: make and check the map's directory, then
 * call it relative to that directory (the directory checked is the one used). */
typedef bm_map *(*map_at_fn) (int, const char *, const char *, uint64_t, uint32_t);

static bm_map *
in_checked_dir (map_at_fn fn, const char *path, uint64_t image_size,
                uint32_t block_size)
{
  char dir[BM_PATH_MAX];
  const char *name;
  bm_map *map;
  int dfd, saved;

  if (path == NULL || *path == '\0') {
    errno = EINVAL;
    bm__error ("dirty map: no path given");
    return NULL;
  }
  if (make_parent (path) == -1)
    return NULL;
  dfd = open_dir_of (path, dir, &name);
  if (dfd == -1)
    return NULL;
  map = fn (dfd, name, path, image_size, block_size);
  saved = errno;
  close (dfd);
  errno = saved;
  return map;
}

BM_API bm_map *
bm_map_create_at (int dirfd, const char *name, const char *label,
                  uint64_t image_size, uint32_t block_size)
{
  char tmp[NAME_MAX + 1];
  static unsigned counter;
  struct bm_header h;
  uint64_t bytes, size;
  int fd;

  if (label == NULL)
    label = name ? name : "";
  if (check_name (label, name) == -1)
    return NULL;
  if (!bm_valid_block_size (block_size)) {
    errno = EINVAL;
    bm__error ("dirty map %s: block size %u is not a power of two between %u "
               "and %u", label, block_size, BM_MIN_BLOCK_SIZE, BM_MAX_BLOCK_SIZE);
    return NULL;
  }
  if (image_size > (uint64_t) INT64_MAX) {
    errno = EINVAL;
    bm__error ("dirty map %s: image size %" PRIu64 " too large", label, image_size);
    return NULL;
  }
  if (check_dirfd (label, dirfd) == -1)
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

  if (snprintf (tmp, sizeof tmp, ".%s.tmp.%ld.%u", name, (long) getpid (),
                __atomic_fetch_add (&counter, 1, __ATOMIC_RELAXED))
      >= (int) sizeof tmp) {
    errno = ENAMETOOLONG;
    bm__error ("dirty map %s: name too long", label);
    return NULL;
  }
  /* 0600, whatever the umask leaves: only the owner may touch a map. */
  fd = openat (dirfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
               0600);
  if (fd == -1) {
    bm__error ("dirty map %s: creating %s: %s", label, tmp, strerror (errno));
    return NULL;
  }
  if (fchmod (fd, 0600) == -1) {
    bm__error ("dirty map %s: chmod 600: %s", label, strerror (errno));
    goto fail;
  }
  if (ftruncate (fd, (off_t) size) == -1) {
    bm__error ("dirty map %s: allocating %" PRIu64 " bytes: %s",
               label, size, strerror (errno));
    goto fail;
  }
  if (pwrite (fd, &h, sizeof h, 0) != (ssize_t) sizeof h) {
    bm__error ("dirty map %s: writing header: %s", label, strerror (errno));
    goto fail;
  }
  /* Publish the finished file; linkat() refuses to replace an existing map
   * (and does not follow a symlink planted at the name). */
  if (linkat (dirfd, tmp, dirfd, name, 0) == -1) {
    bm__error ("dirty map %s: %s", label,
               errno == EEXIST ? "already exists" : strerror (errno));
    goto fail;
  }
  unlinkat (dirfd, tmp, 0);
  return map_fd (label, fd);

 fail:;
  int saved = errno;
  unlinkat (dirfd, tmp, 0);
  close (fd);
  errno = saved;
  return NULL;
}

BM_API bm_map *
bm_map_create (const char *path, uint64_t image_size, uint32_t block_size)
{
  return in_checked_dir (bm_map_create_at, path, image_size, block_size);
}

BM_API bm_map *
bm_map_open_or_create_at (int dirfd, const char *name, const char *label,
                          uint64_t image_size, uint32_t block_size)
{
  uint64_t blocks, words;
  bm_map *map;
  int tries;

  if (label == NULL)
    label = name ? name : "";
  if (!bm_valid_block_size (block_size)) {
    errno = EINVAL;
    bm__error ("dirty map %s: block size %u is not a power of two between %u "
               "and %u", label, block_size, BM_MIN_BLOCK_SIZE,
               BM_MAX_BLOCK_SIZE);
    return NULL;
  }
  /* Another process may create the map between our open and our create
   * (then link fails with EEXIST and we open its map) or, in theory, delete
   * it again; a few rounds settle either race. */
  for (tries = 0; tries < 3; tries++) {
    map = bm_map_open_at (dirfd, name, label);
    if (map == NULL && errno == ENOENT)
      map = bm_map_create_at (dirfd, name, label, image_size, block_size);
    if (map != NULL || (errno != EEXIST && errno != ENOENT))
      break;
  }
  if (map == NULL)
    return NULL;

  geometry (image_size, block_size, &blocks, &words);
  if (map->blocks != blocks || map->block_size != block_size) {
    bm__error ("dirty map %s: geometry mismatch: map has %" PRIu64 " blocks of "
               "%u bytes, export needs %" PRIu64 " blocks of %u bytes",
               label, map->blocks, map->block_size, blocks, block_size);
    bm_map_close (map);
    errno = EINVAL;
    return NULL;
  }
  if (map->image_size != image_size) {
    bm__error ("dirty map %s: geometry mismatch: map is for %" PRIu64
               " bytes, export is %" PRIu64 " bytes",
               label, map->image_size, image_size);
    bm_map_close (map);
    errno = EINVAL;
    return NULL;
  }
  return map;
}

BM_API bm_map *
bm_map_open_or_create (const char *path, uint64_t image_size, uint32_t block_size)
{
  return in_checked_dir (bm_map_open_or_create_at, path, image_size, block_size);
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

/* Everything bm_map_info reports except the two counts, which read the
 * whole of both bitmaps (at 4 KiB blocks, 32 MiB each per TiB of disk, and a
 * read of a never-written page of the shared map allocates it). */
BM_API int
bm_map_counters (bm_map *map, struct bm_info *out)
{
  if (bm__check_map_arg (map, out, "bm_map_counters") == -1)
    return -1;
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
  return 0;
}

BM_API int
bm_map_info (bm_map *map, struct bm_info *out)
{
  if (bm__check_map_arg (map, out, "bm_map_info") == -1)
    return -1;
  if (bm_map_counters (map, out) == -1)
    return -1;
  out->dirty_blocks = (uint64_t) bm__popcount_words (map->dirty, map->words);
  out->gated_blocks = (uint64_t) bm__popcount_words (map->gate, map->words);
  return 0;
}

/* ---- throttle setting, owner, cookie, flags ------------------------------ */

BM_API int
bm_set_throttle (bm_map *map, uint64_t bytes_per_second)
{
  if (bm__check_map (map, "bm_set_throttle") == -1)
    return -1;
  __atomic_store_n (&map->hdr->throttle_bps, bytes_per_second, __ATOMIC_SEQ_CST);
  return 0;
}

BM_API int
bm_set_owner (bm_map *map, uint64_t pid)
{
  if (bm__check_map (map, "bm_set_owner") == -1)
    return -1;
  __atomic_store_n (&map->hdr->owner_pid, pid, __ATOMIC_SEQ_CST);
  return 0;
}

/* The cookie is written only by the orchestrator, before the filter or the
 * receiver needs it; it is copied bytewise, not atomically. */
BM_API int
bm_get_cookie (bm_map *map, uint8_t out[BM_COOKIE_SIZE])
{
  if (bm__check_map_arg (map, out, "bm_get_cookie") == -1)
    return -1;
  memcpy (out, map->hdr->cookie, BM_COOKIE_SIZE);
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  return 0;
}

BM_API int
bm_set_cookie (bm_map *map, const uint8_t cookie[BM_COOKIE_SIZE])
{
  if (bm__check_map_arg (map, cookie, "bm_set_cookie") == -1)
    return -1;
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
