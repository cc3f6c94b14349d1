// A disk whose flushes never return, for tests/durability.rs: loaded into `tally serve` with
// LD_PRELOAD, it makes every fsync, fdatasync and sync_file_range on a file under
// $STALL_SYNC_DIR block for as long as the file $STALL_SYNC_FLAG exists, the way a dying SD
// card (or a deadlocked storage engine) holds its callers. The product binary is unchanged.
// With $STALL_SYNC_DELAY_US, each of those calls also takes that much longer: a slow disk,
// for the durability benchmark (bench/harness/src/scenarios/durability.rs).
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int under_dir(int fd) {
  const char *dir = getenv("STALL_SYNC_DIR");
  if (dir == NULL) return 0;
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t len = readlink(link, path, sizeof path - 1);
  if (len < 0) return 0;
  path[len] = '\0';
  return strncmp(path, dir, strlen(dir)) == 0;
}

static int stalled(void) {
  const char *flag = getenv("STALL_SYNC_FLAG");
  return flag != NULL && access(flag, F_OK) == 0;
}

static void hold(int fd) {
  if (!under_dir(fd)) return;
  const char *delay = getenv("STALL_SYNC_DELAY_US");
  if (delay != NULL) usleep((useconds_t)atol(delay));
  while (stalled()) usleep(10 * 1000);
}

int fsync(int fd) {
  static int (*real)(int);
  if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  hold(fd);
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  hold(fd);
  return real(fd);
}

int sync_file_range(int fd, off64_t offset, off64_t nbytes, unsigned int flags) {
  static int (*real)(int, off64_t, off64_t, unsigned int);
  if (real == NULL) real = (int (*)(int, off64_t, off64_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
  hold(fd);
  return real(fd, offset, nbytes, flags);
}
