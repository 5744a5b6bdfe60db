/*
 * A stand-in for libxenevtchn.so.1 and libxengnttab.so.1, for testing the addon's event
 * channel and grant table handles on a machine without Xen (test/native/fake-xen.test.ts
 * builds it and puts it first on LD_LIBRARY_PATH of a child process). It behaves as the
 * real libraries do for one domain talking to itself (domid 0): interdomain channels
 * between ports of the process, events delivered through each handle's pipe, and
 * granted pages (a memfd) mapped a second time by the grant refs. Only domid 0 exists.
 * At exit it prints what was left open: "fake-xen: handles N mappings M".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_PORTS 1024
#define MAX_REFS 4096
#define PAGE 4096

typedef struct xenevtchn_handle { int rd, wr; } xenevtchn_handle;
typedef struct xengnttab_handle { int unused; } xengnttab_handle;
typedef struct xengntshr_handle { int unused; } xengntshr_handle;
struct xentoollog_logger;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int handles, mappings;

enum { FREE, UNBOUND, INTERDOMAIN, VIRQ };
static struct { int state; xenevtchn_handle *owner; int peer; int virq; } ports[MAX_PORTS];
static struct { int fd; int page; int used; } refs[MAX_REFS];
static int next_ref = 8;

static void __attribute__((destructor)) report(void) {
  fprintf(stderr, "fake-xen: handles %d mappings %d\n", handles, mappings);
}

xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *l, unsigned flags) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return NULL;
  xenevtchn_handle *h = calloc(1, sizeof *h);
  h->rd = fds[0];
  h->wr = fds[1];
  pthread_mutex_lock(&lock);
  handles++;
  pthread_mutex_unlock(&lock);
  return h;
}

int xenevtchn_close(xenevtchn_handle *h) {
  if (!h) return 0;
  pthread_mutex_lock(&lock);
  for (int p = 1; p < MAX_PORTS; p++) {
    if (ports[p].owner != h) continue;
    if (ports[p].state == INTERDOMAIN) ports[ports[p].peer].state = UNBOUND;
    ports[p].state = FREE;
    ports[p].owner = NULL;
  }
  handles--;
  pthread_mutex_unlock(&lock);
  close(h->rd);
  close(h->wr);
  free(h);
  return 0;
}

int xenevtchn_fd(xenevtchn_handle *h) { return h->rd; }

static int alloc_port(xenevtchn_handle *h, int state) {
  for (int p = 1; p < MAX_PORTS; p++) {
    if (ports[p].state == FREE) {
      ports[p].state = state;
      ports[p].owner = h;
      return p;
    }
  }
  errno = ENOSPC;
  return -1;
}

int xenevtchn_bind_unbound_port(xenevtchn_handle *h, uint32_t domid) {
  pthread_mutex_lock(&lock);
  int p = alloc_port(h, UNBOUND);
  pthread_mutex_unlock(&lock);
  return p;
}

int xenevtchn_bind_interdomain(xenevtchn_handle *h, uint32_t domid, uint32_t remote) {
  if (domid != 0) return errno = ESRCH, -1;
  pthread_mutex_lock(&lock);
  int p = -1;
  if (remote == 0 || remote >= MAX_PORTS || ports[remote].state != UNBOUND) {
    errno = EINVAL;
  } else if ((p = alloc_port(h, INTERDOMAIN)) > 0) {
    ports[p].peer = remote;
    ports[remote].state = INTERDOMAIN;
    ports[remote].peer = p;
  }
  pthread_mutex_unlock(&lock);
  return p;
}

int xenevtchn_bind_virq(xenevtchn_handle *h, unsigned int virq) {
  pthread_mutex_lock(&lock);
  int p = -1, bound = 0;
  for (int q = 1; q < MAX_PORTS; q++) {
    if (ports[q].state == VIRQ && ports[q].virq == (int)virq) bound = 1;
  }
  if (virq >= 24) {
    errno = EINVAL;
  } else if (bound) {
    errno = EEXIST;
  } else if ((p = alloc_port(h, VIRQ)) > 0) {
    ports[p].virq = virq;
  }
  pthread_mutex_unlock(&lock);
  return p;
}

int xenevtchn_notify(xenevtchn_handle *h, uint32_t port) {
  pthread_mutex_lock(&lock);
  int rc = 0;
  if (port == 0 || port >= MAX_PORTS || ports[port].owner != h) {
    errno = ENOTCONN, rc = -1;
  } else if (ports[port].state == VIRQ) {
    errno = EINVAL, rc = -1;
  } else if (ports[port].state == INTERDOMAIN) {
    uint32_t peer = ports[port].peer;
    if (write(ports[peer].owner->wr, &peer, sizeof peer) != sizeof peer) rc = -1;
  }
  pthread_mutex_unlock(&lock);
  return rc;
}

int xenevtchn_unbind(xenevtchn_handle *h, uint32_t port) {
  pthread_mutex_lock(&lock);
  int rc = 0;
  if (port == 0 || port >= MAX_PORTS || ports[port].owner != h) {
    errno = ENOTCONN, rc = -1;
  } else {
    if (ports[port].state == INTERDOMAIN) ports[ports[port].peer].state = UNBOUND;
    ports[port].state = FREE;
    ports[port].owner = NULL;
  }
  pthread_mutex_unlock(&lock);
  return rc;
}

int xenevtchn_pending(xenevtchn_handle *h) {
  uint32_t port;
  return read(h->rd, &port, sizeof port) == sizeof port ? (int)port : -1;
}

int xenevtchn_unmask(xenevtchn_handle *h, uint32_t port) { return 0; }

xengnttab_handle *xengnttab_open(struct xentoollog_logger *l, unsigned flags) {
  pthread_mutex_lock(&lock);
  handles++;
  pthread_mutex_unlock(&lock);
  return calloc(1, sizeof(xengnttab_handle));
}

xengntshr_handle *xengntshr_open(struct xentoollog_logger *l, unsigned flags) {
  pthread_mutex_lock(&lock);
  handles++;
  pthread_mutex_unlock(&lock);
  return calloc(1, sizeof(xengntshr_handle));
}

int xengnttab_close(xengnttab_handle *h) {
  pthread_mutex_lock(&lock);
  handles--;
  pthread_mutex_unlock(&lock);
  free(h);
  return 0;
}

int xengntshr_close(xengntshr_handle *h) { return xengnttab_close((xengnttab_handle *)h); }

void *xengntshr_share_pages(xengntshr_handle *h, uint32_t domid, int count, uint32_t *out, int writable) {
  if (domid != 0) return errno = ESRCH, NULL;
  int fd = memfd_create("fake-grant", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)count * PAGE) < 0) return NULL;
  void *addr = mmap(NULL, (size_t)count * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return NULL;
  pthread_mutex_lock(&lock);
  for (int i = 0; i < count; i++) {
    int ref = next_ref++ % MAX_REFS;
    refs[ref].fd = dup(fd);
    refs[ref].page = i;
    refs[ref].used = 1;
    out[i] = ref;
  }
  mappings++;
  pthread_mutex_unlock(&lock);
  close(fd);
  return addr;
}

int xengntshr_unshare(xengntshr_handle *h, void *addr, uint32_t count) {
  pthread_mutex_lock(&lock);
  mappings--;
  pthread_mutex_unlock(&lock);
  return munmap(addr, (size_t)count * PAGE);
}

void *xengnttab_map_domain_grant_refs(xengnttab_handle *h, uint32_t count, uint32_t domid, uint32_t *r, int prot) {
  if (domid != 0) return errno = ESRCH, NULL;
  pthread_mutex_lock(&lock);
  void *addr = NULL;
  int ok = 1;
  for (uint32_t i = 0; i < count; i++) {
    if (r[i] >= MAX_REFS || !refs[r[i]].used || refs[r[i]].page != refs[r[0]].page + (int)i) ok = 0;
  }
  if (!ok) {
    errno = EINVAL;
  } else {
    addr = mmap(NULL, (size_t)count * PAGE, prot, MAP_SHARED, refs[r[0]].fd, (off_t)refs[r[0]].page * PAGE);
    if (addr == MAP_FAILED) addr = NULL; else mappings++;
  }
  pthread_mutex_unlock(&lock);
  return addr;
}

int xengnttab_unmap(xengnttab_handle *h, void *addr, uint32_t count) {
  pthread_mutex_lock(&lock);
  mappings--;
  pthread_mutex_unlock(&lock);
  return munmap(addr, (size_t)count * PAGE);
}
