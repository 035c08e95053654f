/*
 * The attacker: a traced command that tries to make the trace tell a wrong story about which
 * files it wrote and what it executed. `oci-attest-tests::attack` compiles it once per test run.
 *
 *   attacker STEP ARGS... [+ STEP ARGS...]...
 *
 * runs the steps in order in one process (later steps see the cwd, root, fds and mounts the
 * earlier ones set up). Any failing call exits 99 with the reason on stderr, so a test never
 * mistakes an attack that did not happen for a trace that saw through it.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/loop.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "attacker: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
	exit(99);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
	}
}

static void write_all(int fd, const void *data, size_t len, const char *what)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("write", what);
		}
		p += n;
		len -= (size_t)n;
	}
}

static int create_at(int dirfd, const char *path, const char *content)
{
	int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("open for writing", path);
	write_all(fd, content, strlen(content), path);
	return close(fd);
}

/* The whole content of a (small) file, NUL-terminated. */
static char *slurp(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open", path);
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("fstat", path);
	char *buf = malloc((size_t)st.st_size + 1);
	ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
	if (n != st.st_size)
		die("read", path);
	buf[n] = 0;
	close(fd);
	*len = (size_t)n;
	return buf;
}

static int number(const char *text)
{
	return atoi(text);
}

/* ---- plain file system steps ---- */

static void step_mkdir(char **a) { if (mkdir(a[0], 0755) < 0) die("mkdir", a[0]); }
static void step_chdir(char **a) { if (chdir(a[0]) < 0) die("chdir", a[0]); }
static void step_symlink(char **a) { if (symlink(a[0], a[1]) < 0) die("symlink", a[1]); }
static void step_write(char **a) { create_at(AT_FDCWD, a[0], a[1]); }
static void step_rename(char **a) { if (rename(a[0], a[1]) < 0) die("rename", a[0]); }
static void step_link(char **a) { if (link(a[0], a[1]) < 0) die("link", a[0]); }
static void step_unlink(char **a) { if (unlink(a[0]) < 0) die("unlink", a[0]); }
static void step_sleep(char **a) { sleep_ms(number(a[0])); }

static void step_mkdirs(char **a)
{
	char path[4096];
	snprintf(path, sizeof path, "%s", a[0]);
	for (char *p = path + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			if (mkdir(path, 0755) < 0 && errno != EEXIST)
				die("mkdir", path);
			*p = '/';
		}
	}
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		die("mkdir", path);
}

static void step_chroot(char **a)
{
	if (chroot(a[0]) < 0)
		die("chroot", a[0]);
	if (chdir("/") < 0)
		die("chdir", "/");
}

static void step_exchange(char **a)
{
	if (syscall(SYS_renameat2, AT_FDCWD, a[0], AT_FDCWD, a[1], RENAME_EXCHANGE) < 0)
		die("renameat2 RENAME_EXCHANGE", a[0]);
}

static void step_truncate(char **a)
{
	if (truncate(a[0], number(a[1])) < 0)
		die("truncate", a[0]);
}

/* Opens PATH with FLAGS at the fd number WANT (so a later step can name it). */
static void open_at_number(const char *path, int flags, const char *want)
{
	int fd = open(path, flags);
	if (fd < 0)
		die("open", path);
	if (fd != number(want)) {
		if (dup2(fd, number(want)) < 0)
			die("dup2", path);
		close(fd);
	}
}

static void step_open_dir(char **a) { open_at_number(a[0], O_RDONLY | O_DIRECTORY, a[1]); }

/* An O_PATH descriptor: it can neither read nor write. */
static void step_open_path(char **a) { open_at_number(a[0], O_PATH, a[1]); }

/* A regular file made by mknod rather than open. */
static void step_mknod(char **a)
{
	if (mknod(a[0], S_IFREG | 0644, 0) < 0)
		die("mknod", a[0]);
}

static void step_dup2(char **a)
{
	if (dup2(number(a[0]), number(a[1])) < 0)
		die("dup2", a[0]);
}

static void step_close(char **a) { close(number(a[0])); }
static void step_write_at(char **a) { create_at(number(a[0]), a[1], a[2]); }

static void step_fchdir(char **a)
{
	if (fchdir(number(a[0])) < 0)
		die("fchdir", a[0]);
}

/* Opened read-write, read, never changed. */
static void step_open_rdwr(char **a)
{
	char buf[256];
	int fd = open(a[0], O_RDWR);
	if (fd < 0)
		die("open O_RDWR", a[0]);
	if (read(fd, buf, sizeof buf) < 0)
		die("read", a[0]);
	close(fd);
}

/* Holds an exclusive flock on an existing lock file while writing another file. */
static void step_flock_write(char **a)
{
	int lock = open(a[0], O_RDWR | O_CREAT, 0644);
	if (lock < 0)
		die("open lock", a[0]);
	if (flock(lock, LOCK_EX) < 0)
		die("flock", a[0]);
	create_at(AT_FDCWD, a[1], a[2]);
	flock(lock, LOCK_UN);
	close(lock);
}

/* A nameless file, written, then given a name. */
static void step_tmpfile_link(char **a)
{
	char proc[64];
	int fd = open(a[0], O_TMPFILE | O_WRONLY, 0644);
	if (fd < 0)
		die("open O_TMPFILE", a[0]);
	write_all(fd, a[2], strlen(a[2]), a[1]);
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, AT_FDCWD, a[1], AT_SYMLINK_FOLLOW) < 0)
		die("linkat", a[1]);
	close(fd);
}

/* Opens an existing file through a file handle: no path at open time. */
static void step_handle_write(char **a)
{
	struct file_handle *fh = malloc(sizeof *fh + MAX_HANDLE_SZ);
	int mount_id;
	fh->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, a[0], fh, &mount_id, 0) < 0)
		die("name_to_handle_at", a[0]);
	int mount_fd = open(".", O_RDONLY | O_DIRECTORY);
	int fd = open_by_handle_at(mount_fd, fh, O_WRONLY | O_TRUNC);
	if (fd < 0)
		die("open_by_handle_at", a[0]);
	write_all(fd, a[1], strlen(a[1]), a[0]);
	close(fd);
	close(mount_fd);
}

/* ---- io_uring: open, write and close without a single file syscall ---- */

struct ring {
	int fd;
	unsigned *sq_tail, *sq_array, sq_mask;
	unsigned *cq_head, *cq_tail, cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int ring_submit(struct ring *r, struct io_uring_sqe *sqe)
{
	unsigned tail = *r->sq_tail, index = tail & r->sq_mask;
	r->sqes[index] = *sqe;
	r->sq_array[index] = index;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	if (syscall(__NR_io_uring_enter, r->fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		die("io_uring_enter", NULL);
	unsigned head = *r->cq_head;
	while (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
	}
	int res = r->cqes[head & r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

static void step_iouring_write(char **a)
{
	struct io_uring_params p;
	struct ring r;
	memset(&p, 0, sizeof p);
	r.fd = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (r.fd < 0)
		die("io_uring_setup", NULL);
	size_t sq_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	size_t ring_size = sq_size > cq_size ? sq_size : cq_size;
	char *sq = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r.fd,
			IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		die("mmap sq ring", NULL);
	char *cq = sq;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
		cq = mmap(NULL, cq_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r.fd,
			  IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			die("mmap cq ring", NULL);
	}
	r.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		      MAP_SHARED | MAP_POPULATE, r.fd, IORING_OFF_SQES);
	if (r.sqes == MAP_FAILED)
		die("mmap sqes", NULL);
	r.sq_tail = (unsigned *)(sq + p.sq_off.tail);
	r.sq_array = (unsigned *)(sq + p.sq_off.array);
	r.sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
	r.cq_head = (unsigned *)(cq + p.cq_off.head);
	r.cq_tail = (unsigned *)(cq + p.cq_off.tail);
	r.cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
	r.cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

	struct io_uring_sqe sqe;
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_OPENAT;
	sqe.fd = AT_FDCWD;
	sqe.addr = (uintptr_t)a[0];
	sqe.open_flags = O_WRONLY | O_CREAT | O_TRUNC;
	sqe.len = 0644;
	int fd = ring_submit(&r, &sqe);
	if (fd < 0) {
		errno = -fd;
		die("io_uring openat", a[0]);
	}
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_WRITE;
	sqe.fd = fd;
	sqe.addr = (uintptr_t)a[1];
	sqe.len = (unsigned)strlen(a[1]);
	int written = ring_submit(&r, &sqe);
	if (written != (int)strlen(a[1])) {
		errno = written < 0 ? -written : EIO;
		die("io_uring write", a[0]);
	}
	memset(&sqe, 0, sizeof sqe);
	sqe.opcode = IORING_OP_CLOSE;
	sqe.fd = fd;
	ring_submit(&r, &sqe);
	close(r.fd);
}

/* ---- 32-bit compat syscalls from this 64-bit process ---- */

static long int80(long nr, long a, long b, long c)
{
	long ret;
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(nr), "b"(a), "c"(b), "d"(c)
			 : "memory", "r8", "r9", "r10", "r11");
	return ret;
}

static void step_compat_write(char **a)
{
	/* int $0x80 passes 32-bit pointers: the strings must live below 4 GiB. */
	char *low = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT,
			 -1, 0);
	if (low == MAP_FAILED)
		die("mmap MAP_32BIT", NULL);
	snprintf(low, 4096, "%s", a[0]);
	snprintf(low + 4096, 4096, "%s", a[1]);
	long fd = int80(5 /* i386 open */, (long)(uintptr_t)low, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		errno = (int)-fd;
		die("int $0x80 open", a[0]);
	}
	long n = int80(4 /* i386 write */, fd, (long)(uintptr_t)(low + 4096), (long)strlen(a[1]));
	if (n != (long)strlen(a[1])) {
		errno = n < 0 ? (int)-n : EIO;
		die("int $0x80 write", a[0]);
	}
	int80(6 /* i386 close */, fd, 0, 0);
}

/* DEPTH nested directories of 200-byte names, entered one relative chdir at a time, so the
 * file's absolute path is longer than PATH_MAX. */
static void step_deep_write(char **a)
{
	char component[201];
	memset(component, 'd', 200);
	component[200] = 0;
	for (int i = 0; i < number(a[0]); i++) {
		if (mkdir(component, 0755) < 0)
			die("mkdir", "(deep)");
		if (chdir(component) < 0)
			die("chdir", "(deep)");
	}
	create_at(AT_FDCWD, a[1], a[2]);
}

static void step_openat2_in_root(char **a)
{
	struct open_how how;
	int root = open(a[0], O_RDONLY | O_DIRECTORY);
	if (root < 0)
		die("open root", a[0]);
	memset(&how, 0, sizeof how);
	how.flags = O_WRONLY | O_CREAT | O_TRUNC;
	how.mode = 0644;
	how.resolve = RESOLVE_IN_ROOT;
	int fd = (int)syscall(SYS_openat2, root, a[1], &how, sizeof how);
	if (fd < 0)
		die("openat2 RESOLVE_IN_ROOT", a[1]);
	write_all(fd, a[2], strlen(a[2]), a[1]);
	close(fd);
	close(root);
}

/* ---- children sharing this process's fs struct or fd table ---- */

static char clone_stack[256 * 1024] __attribute__((aligned(16)));

static int child_chdir(void *arg)
{
	return chdir((const char *)arg) == 0 ? 0 : 1;
}

static char **clone_files_args;

static int child_open_dir(void *arg)
{
	(void)arg;
	step_open_dir(clone_files_args);
	return 0;
}

static void run_clone(int (*fn)(void *), int flags, void *arg)
{
	int status;
	pid_t pid = clone(fn, clone_stack + sizeof clone_stack, flags | SIGCHLD, arg);
	if (pid < 0)
		die("clone", NULL);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("clone child failed", NULL);
}

static void step_clone_fs_chdir(char **a) { run_clone(child_chdir, CLONE_FS, a[0]); }

static void step_clone_files_open_dir(char **a)
{
	clone_files_args = a;
	run_clone(child_open_dir, CLONE_FILES, NULL);
}

/* ---- writes through an fd this process never opened (inherited from oci-attest's caller) ---- */

static void step_fd_write(char **a)
{
	size_t len;
	char *data = slurp(a[1], &len);
	write_all(number(a[0]), data, len, "inherited fd");
}

static void step_fd_mmap(char **a)
{
	size_t len;
	char *data = slurp(a[1], &len);
	int fd = number(a[0]);
	char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		die("mmap MAP_SHARED", "inherited fd");
	memcpy(map, data, len);
	if (msync(map, len, MS_SYNC) < 0)
		die("msync", "inherited fd");
	munmap(map, len);
}

/* Mapped shared but read-only (nothing to see at mmap), made writable later by mprotect. */
static void step_fd_mprotect(char **a)
{
	size_t len;
	char *data = slurp(a[1], &len);
	char *map = mmap(NULL, len, PROT_READ, MAP_SHARED, number(a[0]), 0);
	if (map == MAP_FAILED)
		die("mmap PROT_READ MAP_SHARED", "inherited fd");
	if (mprotect(map, len, PROT_READ | PROT_WRITE) < 0)
		die("mprotect", "inherited fd");
	memcpy(map, data, len);
	if (msync(map, len, MS_SYNC) < 0)
		die("msync", "inherited fd");
	munmap(map, len);
}

/* Linux native AIO: the write is submitted with io_submit, not a write syscall. */
static void step_fd_aio(char **a)
{
	size_t len;
	char *data = slurp(a[1], &len);
	aio_context_t context = 0;
	struct iocb cb;
	struct iocb *list[1] = { &cb };
	struct io_event event;
	if (syscall(SYS_io_setup, 1, &context) < 0)
		die("io_setup", NULL);
	memset(&cb, 0, sizeof cb);
	cb.aio_fildes = (unsigned)number(a[0]);
	cb.aio_lio_opcode = IOCB_CMD_PWRITE;
	cb.aio_buf = (uintptr_t)data;
	cb.aio_nbytes = len;
	if (syscall(SYS_io_submit, context, 1, list) != 1)
		die("io_submit", "inherited fd");
	if (syscall(SYS_io_getevents, context, 1, 1, &event, NULL) != 1 || event.res != (long long)len)
		die("io_getevents", "inherited fd");
	syscall(SYS_io_destroy, context);
}

static void step_fd_pwritev2(char **a)
{
	size_t len;
	struct iovec iov;
	iov.iov_base = slurp(a[1], &len);
	iov.iov_len = len;
	if (pwritev2(number(a[0]), &iov, 1, 0, 0) != (ssize_t)len)
		die("pwritev2", "inherited fd");
}

static void step_fd_sendfile(char **a)
{
	struct stat st;
	int src = open(a[1], O_RDONLY);
	if (src < 0 || fstat(src, &st) < 0)
		die("open", a[1]);
	if (sendfile(number(a[0]), src, NULL, (size_t)st.st_size) != st.st_size)
		die("sendfile", "inherited fd");
	close(src);
}

static void step_fd_copy_file_range(char **a)
{
	struct stat st;
	int src = open(a[1], O_RDONLY);
	if (src < 0 || fstat(src, &st) < 0)
		die("open", a[1]);
	if (copy_file_range(src, NULL, number(a[0]), NULL, (size_t)st.st_size, 0) != st.st_size)
		die("copy_file_range", "inherited fd");
	close(src);
}

static void step_fd_splice(char **a)
{
	size_t len;
	int pipefd[2];
	char *data = slurp(a[1], &len);
	if (pipe(pipefd) < 0)
		die("pipe", NULL);
	write_all(pipefd[1], data, len, "pipe");
	if (splice(pipefd[0], NULL, number(a[0]), NULL, len, 0) != (ssize_t)len)
		die("splice", "inherited fd");
	close(pipefd[0]);
	close(pipefd[1]);
}

static void step_fd_ftruncate(char **a)
{
	if (ftruncate(number(a[0]), number(a[1])) < 0)
		die("ftruncate", "inherited fd");
}

static void step_fd_fallocate(char **a)
{
	if (fallocate(number(a[0]), 0, 0, number(a[1])) < 0)
		die("fallocate", "inherited fd");
}

/* A sibling opens the file read-only; this process reopens it for writing via /proc/PID/fd/N. */
static void step_proc_fd_sibling(char **a)
{
	int ready[2], done[2];
	char c = 0, proc[64];
	if (pipe(ready) < 0 || pipe(done) < 0)
		die("pipe", NULL);
	pid_t sibling = fork();
	if (sibling == 0) {
		int fd = open(a[0], O_RDONLY);
		if (fd < 0)
			die("open", a[0]);
		write_all(ready[1], &fd, sizeof fd, "pipe");
		while (read(done[0], &c, 1) < 0 && errno == EINTR) {
		}
		_exit(0);
	}
	int fd;
	if (read(ready[0], &fd, sizeof fd) != sizeof fd)
		die("sibling did not start", NULL);
	snprintf(proc, sizeof proc, "/proc/%d/fd/%d", sibling, fd);
	create_at(AT_FDCWD, proc, a[1]);
	write_all(done[1], "x", 1, "pipe");
	waitpid(sibling, NULL, 0);
}

/* A bind mount, private to this process's new mount namespace, puts SOURCE's directory
 * where TARGET is; outside the namespace TARGET still shows its own files. */
static void step_bind_private(char **a)
{
	if (unshare(CLONE_NEWNS) < 0)
		die("unshare(CLONE_NEWNS)", NULL);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("mount --make-rprivate", "/");
	if (mount(a[0], a[1], NULL, MS_BIND, NULL) < 0)
		die("mount --bind", a[0]);
}

/* ---- holding a syscall in the kernel with a file lease ---- */

static void ignore_signal(int sig) { (void)sig; }

/* Forks a process that holds a lease of `type` on `path` until a byte arrives on the returned
 * fd: an open (or exec) that breaks the lease blocks in the kernel until then. */
static int hold_lease(const char *path, int type, pid_t *holder)
{
	int ready[2], go[2];
	char c;
	if (pipe(ready) < 0 || pipe(go) < 0)
		die("pipe", NULL);
	*holder = fork();
	if (*holder == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = ignore_signal;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGIO, &sa, NULL);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			die("open for lease", path);
		if (fcntl(fd, F_SETLEASE, type) < 0)
			die("F_SETLEASE", path);
		write_all(ready[1], "r", 1, "pipe");
		while (read(go[0], &c, 1) < 0 && errno == EINTR) {
		}
		fcntl(fd, F_SETLEASE, F_UNLCK);
		_exit(0);
	}
	if (read(ready[0], &c, 1) != 1)
		die("lease holder did not start", path);
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	return go[1];
}

static void release_lease(int go, pid_t holder)
{
	write_all(go, "g", 1, "pipe");
	close(go);
	waitpid(holder, NULL, 0);
}

static char swap_path[4096];
static struct open_how swap_how;
static const char *swap_to;
static int swap_go;
static pid_t swap_holder;

static void *swap_open_arguments(void *arg)
{
	(void)arg;
	sleep_ms(300);
	snprintf(swap_path, sizeof swap_path, "%s", swap_to);
	swap_how.flags = O_RDONLY;
	sleep_ms(100);
	release_lease(swap_go, swap_holder);
	return NULL;
}

/* openat2(TRUE, O_WRONLY|O_TRUNC) held in the kernel by a lease while another thread rewrites
 * the path to DECOY and the flags to O_RDONLY in this process's memory. */
static void step_lease_swap_open(char **a)
{
	pthread_t thread;
	snprintf(swap_path, sizeof swap_path, "%s", a[0]);
	memset(&swap_how, 0, sizeof swap_how);
	swap_how.flags = O_WRONLY | O_TRUNC;
	swap_to = a[1];
	swap_go = hold_lease(a[0], F_RDLCK, &swap_holder);
	pthread_create(&thread, NULL, swap_open_arguments, NULL);
	int fd = (int)syscall(SYS_openat2, AT_FDCWD, swap_path, &swap_how, sizeof swap_how);
	if (fd < 0)
		die("openat2", a[0]);
	pthread_join(thread, NULL);
	write_all(fd, a[2], strlen(a[2]), a[0]);
	close(fd);
}

static char swap_arg[4096];

static void *swap_exec_argument(void *arg)
{
	(void)arg;
	sleep_ms(300);
	for (char *p = swap_arg; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	sleep_ms(100);
	release_lease(swap_go, swap_holder);
	return NULL;
}

/* execv(PROG, [PROG, record-argv, OUT, ARG]) held in the kernel (opening PROG breaks a write
 * lease) while another thread upper-cases ARG in this process's memory. */
static void step_exec_swapped_argv(char **a)
{
	pthread_t thread;
	snprintf(swap_arg, sizeof swap_arg, "%s", a[2]);
	swap_go = hold_lease(a[0], F_WRLCK, &swap_holder);
	pthread_create(&thread, NULL, swap_exec_argument, NULL);
	char *argv[] = { a[0], "record-argv", a[1], swap_arg, NULL };
	execv(a[0], argv);
	die("execv", a[0]);
}

/* execv(PROG, argv) with argv the NUL-separated strings of FILE, mapped read-only and dropped
 * from this process's page tables (MADV_DONTNEED) just before: the kernel faults them back in
 * while it copies them, a reader that cannot fault sees nothing. */
static void step_exec_nonresident(char **a)
{
	struct stat st;
	int fd = open(a[1], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size == 0)
		die("open", a[1]);
	char *strings = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (strings == MAP_FAILED)
		die("mmap", a[1]);
	int count = 0;
	for (off_t i = 0; i < st.st_size; i++)
		count += strings[i] == 0;
	char **argv = calloc((size_t)count + 1, sizeof *argv);
	for (int i = 0, offset = 0; i < count; i++) {
		argv[i] = strings + offset;
		offset += (int)strlen(strings + offset) + 1;
	}
	if (madvise(strings, (size_t)st.st_size, MADV_DONTNEED) < 0)
		die("madvise", a[1]);
	execv(a[0], argv);
	die("execv", a[0]);
}

/* ---- processes that outlive the command ---- */

/* Forks a child that writes PATH after MS milliseconds; this process goes on. */
static void step_orphan(char **a)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork", NULL);
	if (pid == 0) {
		sleep_ms(number(a[0]));
		create_at(AT_FDCWD, a[1], a[2]);
		_exit(0);
	}
}

/* The classic daemon: fork, setsid, fork again; the middle process exits at once. The daemon
 * writes its pid to PIDFILE, then PATH after MS milliseconds. */
static void step_daemon(char **a)
{
	pid_t middle = fork();
	if (middle < 0)
		die("fork", NULL);
	if (middle == 0) {
		setsid();
		pid_t daemon = fork();
		if (daemon == 0) {
			char pid[32];
			snprintf(pid, sizeof pid, "%d\n", getpid());
			create_at(AT_FDCWD, a[1], pid);
			sleep_ms(number(a[0]));
			create_at(AT_FDCWD, a[2], a[3]);
			_exit(0);
		}
		_exit(daemon < 0 ? 1 : 0);
	}
	waitpid(middle, NULL, 0);
}

/* ---- pending-syscall exhaustion ---- */

static const char *flood_fifo = "flood.fifo";
static int flood_started;

static void *flood_open(void *arg)
{
	(void)arg;
	__atomic_add_fetch(&flood_started, 1, __ATOMIC_SEQ_CST);
	int fd = open(flood_fifo, O_WRONLY);
	if (fd >= 0)
		close(fd);
	return NULL;
}

static const char *held_path, *held_content;

static void *held_write(void *arg)
{
	(void)arg;
	create_at(AT_FDCWD, held_path, held_content);
	return NULL;
}

/* The real write (PATH, opened while a lease holds it in the kernel) starts first; then N
 * threads block in opens of a FIFO; only then does the real open complete. A tracer that keeps
 * syscall arguments in a bounded map between entry and exit has to drop something. */
static void step_pending_flood(char **a)
{
	int threads = number(a[0]);
	pthread_t held, *flood = calloc((size_t)threads, sizeof *flood);
	pthread_attr_t attr;
	pid_t holder;
	held_path = a[1];
	held_content = a[2];
	int go = hold_lease(a[1], F_RDLCK, &holder);
	pthread_create(&held, NULL, held_write, NULL);
	sleep_ms(300);
	if (mkfifo(flood_fifo, 0600) < 0)
		die("mkfifo", flood_fifo);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (int i = 0; i < threads; i++)
		if (pthread_create(&flood[i], &attr, flood_open, NULL) != 0)
			die("pthread_create", NULL);
	while (__atomic_load_n(&flood_started, __ATOMIC_SEQ_CST) < threads)
		sleep_ms(10);
	sleep_ms(500);
	release_lease(go, holder);
	pthread_join(held, NULL);
	int reader = open(flood_fifo, O_RDONLY | O_NONBLOCK);
	if (reader < 0)
		die("open", flood_fifo);
	for (int i = 0; i < threads; i++)
		pthread_join(flood[i], NULL);
	close(reader);
	unlink(flood_fifo);
}

/* ---- work done by a process outside the tree ---- */

/* Runs one syscall in the stopped tracee at the `syscall` instruction at `at`. */
static long remote_syscall(pid_t pid, const struct user_regs_struct *base, unsigned long at,
			   long nr, long a, long b, long c)
{
	struct user_regs_struct regs = *base;
	int status;
	regs.rip = at;
	regs.rax = (unsigned long)nr;
	regs.orig_rax = (unsigned long)-1;
	regs.rdi = (unsigned long)a;
	regs.rsi = (unsigned long)b;
	regs.rdx = (unsigned long)c;
	if (ptrace(PTRACE_SETREGS, pid, NULL, &regs) < 0)
		die("PTRACE_SETREGS", NULL);
	if (ptrace(PTRACE_SINGLESTEP, pid, NULL, NULL) < 0 || waitpid(pid, &status, 0) < 0)
		die("PTRACE_SINGLESTEP", NULL);
	if (ptrace(PTRACE_GETREGS, pid, NULL, &regs) < 0)
		die("PTRACE_GETREGS", NULL);
	return (long)regs.rax;
}

static void poke_string(pid_t pid, unsigned long at, const char *text)
{
	size_t len = strlen(text) + 1;
	for (size_t i = 0; i < len; i += sizeof(long)) {
		long word = 0;
		memcpy(&word, text + i, len - i < sizeof word ? len - i : sizeof word);
		if (ptrace(PTRACE_POKEDATA, pid, (void *)(at + i), (void *)word) < 0)
			die("PTRACE_POKEDATA", NULL);
	}
}

/* Makes PID, a process outside the traced tree sleeping in a syscall, open PATH and write
 * CONTENT: the file is written, but by someone the trace does not follow. */
static void step_ptrace_write(char **a)
{
	pid_t pid = number(a[0]);
	struct user_regs_struct saved;
	int status;
	if (ptrace(PTRACE_ATTACH, pid, NULL, NULL) < 0 || waitpid(pid, &status, 0) < 0)
		die("PTRACE_ATTACH", a[0]);
	if (ptrace(PTRACE_GETREGS, pid, NULL, &saved) < 0)
		die("PTRACE_GETREGS", a[0]);
	/* Stopped inside a syscall: the instruction before rip is that `syscall`. */
	unsigned long at = saved.rip - 2;
	unsigned long scratch = (saved.rsp - 4096) & ~15UL;
	poke_string(pid, scratch, a[1]);
	poke_string(pid, scratch + 2048, a[2]);
	long fd = remote_syscall(pid, &saved, at, SYS_open, (long)scratch,
				 O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		errno = (int)-fd;
		die("remote open", a[1]);
	}
	remote_syscall(pid, &saved, at, SYS_write, fd, (long)(scratch + 2048), (long)strlen(a[2]));
	remote_syscall(pid, &saved, at, SYS_close, fd, 0, 0);
	if (ptrace(PTRACE_SETREGS, pid, NULL, &saved) < 0 || ptrace(PTRACE_DETACH, pid, NULL, NULL) < 0)
		die("PTRACE_DETACH", a[0]);
}

/* ---- a large fd table, shared by many children ---- */

/* Opens FDS descriptors (as many as the hard limit allows without CAP_SYS_RESOURCE; the count
 * goes to fd-count), then forks CHILDREN children that each inherit the whole table, write
 * child-N and exit. */
static void step_many_fds(char **a)
{
	int fds = number(a[0]), children = number(a[1]);
	struct rlimit limit = { (rlim_t)fds + 64, (rlim_t)fds + 64 };
	char name[256], count[32];
	memset(name, 'f', 200);
	name[200] = 0;
	if (setrlimit(RLIMIT_NOFILE, &limit) < 0) {
		if (getrlimit(RLIMIT_NOFILE, &limit) < 0)
			die("getrlimit", NULL);
		limit.rlim_cur = limit.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &limit) < 0)
			die("setrlimit RLIMIT_NOFILE", a[0]);
		if ((rlim_t)fds + 64 > limit.rlim_max)
			fds = (int)limit.rlim_max - 64;
	}
	snprintf(count, sizeof count, "%d", fds);
	create_at(AT_FDCWD, "fd-count", count);
	create_at(AT_FDCWD, name, "opened many times");
	for (int i = 0; i < fds; i++)
		if (open(name, O_RDONLY) < 0)
			die("open", "(many fds)");
	for (int i = 0; i < children; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork", NULL);
		if (pid == 0) {
			char child[32];
			snprintf(child, sizeof child, "child-%d", i);
			create_at(AT_FDCWD, child, child);
			sleep_ms(200);
			_exit(0);
		}
	}
	while (wait(NULL) > 0) {
	}
}

/* ---- programs ---- */

/* Writes this process's argv (as the kernel gave it) to OUT, one argument per line. */
static void step_record_argv(char **a, int argc, char **argv)
{
	(void)a;
	FILE *out = fopen(argv[2], "w");
	if (!out)
		die("fopen", argv[2]);
	for (int i = 0; i < argc; i++)
		fprintf(out, "%s\n", argv[i]);
	if (fclose(out) != 0)
		die("fclose", argv[2]);
}

/* Renames another file over this running program's own path. */
static void step_replace_program(char **a)
{
	char fresh[4096];
	snprintf(fresh, sizeof fresh, "%s.new", a[0]);
	create_at(AT_FDCWD, fresh, "#!/bin/sh\necho not what ran\n");
	if (rename(fresh, a[0]) < 0)
		die("rename", fresh);
}


/* ---- witnesses: work done for the tree, identities that come back, the files the kernel
 * really wrote (the tests in oci-attest/tests/witnesses.rs) ---- */

/* Content a product sniff takes for a gzip archive, unique per name. */
static void create_archive_like(const char *path, const char *tag)
{
	char content[4096];
	memset(content, 'z', sizeof content);
	content[0] = 0x1f;
	content[1] = (char)0x8b;
	int n = snprintf(content + 2, sizeof content - 2, "%s", tag);
	content[2 + n] = 'z';
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("create", path);
	write_all(fd, content, sizeof content, path);
	close(fd);
}

/* The tree's temp archives in a shared directory: each written, then deleted (as skopeo does in
 * /var/tmp), COUNT times. */
static void step_churn_own(char **a)
{
	char path[4096];
	for (int i = 0; i < number(a[1]); i++) {
		snprintf(path, sizeof path, "%s/own-%d-%d", a[0], (int)getpid(), i);
		create_archive_like(path, path);
		if (unlink(path) < 0)
			die("unlink", path);
		sleep_ms(1);
	}
}

/* Outside the tree: keeps creating archives in DIR for MS milliseconds, so inode numbers the
 * tree frees come back as the stranger's files. */
static void step_churn_stranger(char **a)
{
	char path[4096];
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long i = 0;; i++) {
		snprintf(path, sizeof path, "%s/stranger-%ld", a[0], i);
		create_archive_like(path, path);
		sleep_ms(1);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >
		    number(a[1]))
			break;
	}
}

/* Outside the tree: waits for PATH to exist and then to be deleted, then creates files beside it
 * until one gets its inode number (at most 4000), and stops. */
static void step_steal_inode(char **a)
{
	struct stat st, now;
	while (stat(a[0], &st) < 0)
		sleep_ms(1);
	while (stat(a[0], &now) == 0)
		sleep_ms(1);
	char dir[4096], path[4200];
	snprintf(dir, sizeof dir, "%s", a[0]);
	char *slash = strrchr(dir, '/');
	if (!slash)
		die("no directory in", a[0]);
	*slash = 0;
	for (int i = 0; i < 4000; i++) {
		snprintf(path, sizeof path, "%s/stranger-%d", dir, i);
		create_archive_like(path, path);
		if (stat(path, &now) == 0 && now.st_ino == st.st_ino)
			return;
	}
	errno = EAGAIN;
	die("the inode number never came back for", a[0]);
}

/* Runs PROG (a copy of this helper) in a child that only sleeps, and waits for it. */
static void step_run_child(char **a)
{
	pid_t child = fork();
	if (child < 0)
		die("fork", NULL);
	if (child == 0) {
		execl(a[0], a[0], "sleep", "1", (char *)NULL);
		die("execl", a[0]);
	}
	int status;
	if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("child", a[0]);
}

/* Overwrites the start of PATH in place: same inode, same generation, new content. */
static void step_rewrite_in_place(char **a)
{
	int fd = open(a[0], O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die("open", a[0]);
	if (pwrite(fd, a[1], strlen(a[1]), 0) != (ssize_t)strlen(a[1]))
		die("pwrite", a[0]);
	close(fd);
}

/* Deletes PATH and creates a new file there until the filesystem hands it the old inode number
 * (at most 200 tries; the last file created stays). */
static void step_recreate_same_inode(char **a)
{
	struct stat old, now;
	if (stat(a[0], &old) < 0)
		die("stat", a[0]);
	for (int i = 0; i < 200; i++) {
		if (unlink(a[0]) < 0)
			die("unlink", a[0]);
		create_at(AT_FDCWD, a[0], a[1]);
		if (chmod(a[0], 0755) < 0)
			die("chmod", a[0]);
		if (stat(a[0], &now) < 0)
			die("stat", a[0]);
		if (now.st_ino == old.st_ino)
			return;
	}
	errno = EAGAIN;
	die("the inode number never came back for", a[0]);
}

/* Copies file SOURCE into fd OUT. */
static void copy_into(const char *source, int out)
{
	size_t len;
	char *bytes = slurp(source, &len);
	write_all(out, bytes, len, source);
	free(bytes);
}

/* Copies SOURCE to DEST (made executable). */
static void step_copy(char **a)
{
	int out = open(a[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (out < 0)
		die("create", a[1]);
	copy_into(a[0], out);
	close(out);
}

/* Executes a copy of SOURCE that has no name: KIND memfd (memfd_create), tmpfile (O_TMPFILE in
 * the cwd, never linked) or deleted (a file unlinked before the exec). The child only sleeps. */
static void step_fileless_exec(char **a)
{
	int fd;
	if (strcmp(a[0], "memfd") == 0) {
		fd = memfd_create("payload", 0);
	} else if (strcmp(a[0], "tmpfile") == 0) {
		fd = open(".", O_TMPFILE | O_RDWR, 0755);
	} else {
		fd = open("payload.tmp", O_RDWR | O_CREAT | O_TRUNC, 0755);
	}
	if (fd < 0)
		die("create", a[0]);
	copy_into(a[1], fd);
	/* A file open for writing cannot be executed: reopen it read-only, close the writer. */
	char proc[64];
	snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
	int exe = open(proc, O_RDONLY | O_CLOEXEC);
	if (exe < 0)
		die("reopen", proc);
	close(fd);
	if (strcmp(a[0], "deleted") == 0 && unlink("payload.tmp") < 0)
		die("unlink", "payload.tmp");
	pid_t child = fork();
	if (child < 0)
		die("fork", NULL);
	if (child == 0) {
		char *argv[] = { "payload", "sleep", "1", NULL };
		extern char **environ;
		syscall(SYS_execveat, exe, "", argv, environ, AT_EMPTY_PATH);
		die("execveat", a[0]);
	}
	int status;
	if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		die("fileless child", a[0]);
}

/* ---- the daemon that works for the tree: started outside it, before `run` ---- */

static int unix_socket(const char *path, struct sockaddr_un *address)
{
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		die("socket", path);
	memset(address, 0, sizeof *address);
	address->sun_family = AF_UNIX;
	snprintf(address->sun_path, sizeof address->sun_path, "%s", path);
	return sock;
}

/* Writes TEXT at offset 0 of FD, bypassing the page cache (O_DIRECT set on the open file
 * description, an aligned block): the write dirties no page of the file. */
static void write_direct(int fd, const char *text)
{
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT) < 0)
		die("F_SETFL O_DIRECT", NULL);
	void *block;
	if (posix_memalign(&block, 4096, 4096) != 0)
		die("posix_memalign", NULL);
	memset(block, 0, 4096);
	memcpy(block, text, strlen(text) < 4096 ? strlen(text) : 4096);
	if (pwrite(fd, block, 4096, 0) != 4096)
		die("O_DIRECT pwrite through the received fd", NULL);
	free(block);
}

/* Serves COUNT requests on SOCKET: 'F' with an fd (SCM_RIGHTS): writes TEXT through it (with
 * O_DIRECT when DIRECT: no page dirtied); 'P' with a path: creates that file with TEXT. Answers
 * 'k' once written. READY is created when it listens. */
static void serve(char **a, int direct)
{
	struct sockaddr_un address;
	int server = unix_socket(a[0], &address);
	unlink(a[0]);
	/* Connectable by the command, which runs as another user (as a daemon's socket is). */
	if (bind(server, (struct sockaddr *)&address, sizeof address) < 0 ||
	    chmod(a[0], 0666) < 0 || listen(server, 8) < 0)
		die("listen", a[0]);
	create_at(AT_FDCWD, a[3], "ready");
	for (int served = 0; served < number(a[1]); served++) {
		int client = accept(server, NULL, NULL);
		if (client < 0)
			die("accept", a[0]);
		char request[4096] = { 0 };
		char control[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { request, sizeof request - 1 };
		struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1,
					  .msg_control = control, .msg_controllen = sizeof control };
		if (recvmsg(client, &message, 0) <= 0)
			die("recvmsg", a[0]);
		if (request[0] == 'F') {
			struct cmsghdr *header = CMSG_FIRSTHDR(&message);
			if (!header || header->cmsg_type != SCM_RIGHTS)
				die("no fd received", a[0]);
			int fd;
			memcpy(&fd, CMSG_DATA(header), sizeof fd);
			if (direct)
				write_direct(fd, a[2]);
			else if (pwrite(fd, a[2], strlen(a[2]), 0) != (ssize_t)strlen(a[2]))
				die("pwrite through the received fd", a[0]);
			close(fd);
		} else {
			create_at(AT_FDCWD, request + 1, a[2]);
		}
		if (write(client, "k", 1) != 1)
			die("answer", a[0]);
		close(client);
	}
}

static void step_serve(char **a) { serve(a, 0); }
static void step_serve_direct(char **a) { serve(a, 1); }

/* Outside the tree: opens FILE for writing (creating it), creates READY, and passes the fd to
 * the first client of SOCKET, then waits for its answer. */
static void step_serve_fd(char **a)
{
	struct sockaddr_un address;
	int server = unix_socket(a[0], &address);
	unlink(a[0]);
	/* Connectable by the command, which runs as another user (as a daemon's socket is). */
	if (bind(server, (struct sockaddr *)&address, sizeof address) < 0 ||
	    chmod(a[0], 0666) < 0 || listen(server, 8) < 0)
		die("listen", a[0]);
	int fd = open(a[1], O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0)
		die("open", a[1]);
	create_at(AT_FDCWD, a[2], "ready");
	int client = accept(server, NULL, NULL);
	if (client < 0)
		die("accept", a[0]);
	char control[CMSG_SPACE(sizeof(int))];
	memset(control, 0, sizeof control);
	struct iovec iov = { "F", 1 };
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1,
				  .msg_control = control, .msg_controllen = sizeof control };
	struct cmsghdr *header = CMSG_FIRSTHDR(&message);
	header->cmsg_level = SOL_SOCKET;
	header->cmsg_type = SCM_RIGHTS;
	header->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(header), &fd, sizeof fd);
	if (sendmsg(client, &message, 0) < 0)
		die("sendmsg", a[0]);
	char answer;
	if (read(client, &answer, 1) != 1)
		die("no answer on", a[0]);
	close(client);
	close(fd);
}

/* Connects to SOCKET, receives one fd and writes TEXT through it (the file is not opened by
 * any process of the tree), then answers. */
static void step_receive_fd(char **a)
{
	struct sockaddr_un address;
	int sock = unix_socket(a[0], &address);
	if (connect(sock, (struct sockaddr *)&address, sizeof address) < 0)
		die("connect", a[0]);
	char byte;
	char control[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &byte, 1 };
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1,
				  .msg_control = control, .msg_controllen = sizeof control };
	if (recvmsg(sock, &message, MSG_CMSG_CLOEXEC) <= 0)
		die("recvmsg", a[0]);
	struct cmsghdr *header = CMSG_FIRSTHDR(&message);
	if (!header || header->cmsg_type != SCM_RIGHTS)
		die("no fd received on", a[0]);
	int fd;
	memcpy(&fd, CMSG_DATA(header), sizeof fd);
	if (pwrite(fd, a[1], strlen(a[1]), 0) != (ssize_t)strlen(a[1]))
		die("pwrite through the received fd", a[0]);
	close(fd);
	if (write(sock, "k", 1) != 1)
		die("answer", a[0]);
	close(sock);
}

static void ask_daemon(const char *socket_path, const char *request, int fd)
{
	struct sockaddr_un address;
	int sock = unix_socket(socket_path, &address);
	if (connect(sock, (struct sockaddr *)&address, sizeof address) < 0)
		die("connect", socket_path);
	char control[CMSG_SPACE(sizeof(int))];
	memset(control, 0, sizeof control);
	struct iovec iov = { (void *)request, strlen(request) + 1 };
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (fd >= 0) {
		message.msg_control = control;
		message.msg_controllen = sizeof control;
		struct cmsghdr *header = CMSG_FIRSTHDR(&message);
		header->cmsg_level = SOL_SOCKET;
		header->cmsg_type = SCM_RIGHTS;
		header->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(header), &fd, sizeof fd);
	}
	if (sendmsg(sock, &message, 0) < 0)
		die("sendmsg", socket_path);
	char answer;
	if (read(sock, &answer, 1) != 1)
		die("no answer from", socket_path);
	close(sock);
}

/* Opens FILE for writing (FLAGS: "create" makes it, "existing" opens it as it is, "written"
 * makes it and writes a block of its own, on disk, so that the daemon can overwrite it in place)
 * and passes the fd to the daemon, which writes through it. */
static void step_send_fd(char **a)
{
	int flags = strcmp(a[1], "existing") == 0 ? O_RDWR : O_RDWR | O_CREAT | O_TRUNC;
	int fd = open(a[2], flags | O_CLOEXEC, 0644);
	if (fd < 0)
		die("open", a[2]);
	if (strcmp(a[1], "written") == 0) {
		char block[4096];
		memset(block, 'T', sizeof block);
		if (write(fd, block, sizeof block) != (ssize_t)sizeof block || fsync(fd) < 0)
			die("write", a[2]);
	}
	ask_daemon(a[0], "F", fd);
	close(fd);
}

/* Creates COUNT files passed-0 ... in the working directory and passes them, open for writing,
 * in one SCM_RIGHTS message of one sendmsg over a socketpair (to itself), then closes them. */
static void step_pass_own_fds(char **a)
{
	int count = atoi(a[0]);
	if (count < 1 || count > 253)
		die("pass-own-fds: COUNT must be 1 to 253, not", a[0]);
	int pair[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) < 0)
		die("socketpair", NULL);
	int fds[253];
	for (int i = 0; i < count; i++) {
		char name[32];
		snprintf(name, sizeof name, "passed-%d", i);
		fds[i] = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fds[i] < 0)
			die("open", name);
	}
	size_t size = count * sizeof(int);
	char control[CMSG_SPACE(253 * sizeof(int))];
	memset(control, 0, sizeof control);
	struct iovec iov = { "F", 1 };
	struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
				  .msg_controllen = CMSG_SPACE(size) };
	struct cmsghdr *header = CMSG_FIRSTHDR(&message);
	header->cmsg_level = SOL_SOCKET;
	header->cmsg_type = SCM_RIGHTS;
	header->cmsg_len = CMSG_LEN(size);
	memcpy(CMSG_DATA(header), fds, size);
	if (sendmsg(pair[0], &message, 0) < 0)
		die("sendmsg", NULL);
	char byte;
	struct iovec into = { &byte, 1 };
	struct msghdr received = { .msg_iov = &into, .msg_iovlen = 1, .msg_control = control,
				   .msg_controllen = sizeof control };
	if (recvmsg(pair[1], &received, MSG_CMSG_CLOEXEC) <= 0)
		die("recvmsg", NULL);
	header = CMSG_FIRSTHDR(&received);
	if (!header || header->cmsg_type != SCM_RIGHTS)
		die("no fds received", NULL);
	memcpy(fds, CMSG_DATA(header), size);
	for (int i = 0; i < count; i++)
		close(fds[i]);
}

/* Creates MESSAGES * CMSGS files passed-0 ... and passes them, open for writing, in one
 * sendmmsg of MESSAGES messages over a socketpair, each message with CMSGS SCM_RIGHTS control
 * messages of one fd each. The fds stay in flight until the process exits. */
static void step_pass_own_fds_mmsg(char **a)
{
	int messages = atoi(a[0]), cmsgs = atoi(a[1]);
	if (messages < 1 || messages > 8 || cmsgs < 1 || cmsgs > 8)
		die("pass-own-fds-mmsg: MESSAGES and CMSGS must be 1 to 8", NULL);
	int pair[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, pair) < 0)
		die("socketpair", NULL);
	static char control[8][8 * CMSG_SPACE(sizeof(int))];
	struct iovec iov = { "F", 1 };
	struct mmsghdr batch[8];
	memset(batch, 0, sizeof batch);
	memset(control, 0, sizeof control);
	for (int m = 0; m < messages; m++) {
		struct msghdr *message = &batch[m].msg_hdr;
		message->msg_iov = &iov;
		message->msg_iovlen = 1;
		message->msg_control = control[m];
		message->msg_controllen = cmsgs * CMSG_SPACE(sizeof(int));
		struct cmsghdr *header = CMSG_FIRSTHDR(message);
		for (int c = 0; c < cmsgs; c++, header = CMSG_NXTHDR(message, header)) {
			char name[32];
			snprintf(name, sizeof name, "passed-%d", m * cmsgs + c);
			int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
			if (fd < 0)
				die("open", name);
			header->cmsg_level = SOL_SOCKET;
			header->cmsg_type = SCM_RIGHTS;
			header->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(header), &fd, sizeof fd);
		}
	}
	if (sendmmsg(pair[0], batch, messages, 0) != messages)
		die("sendmmsg", NULL);
}

/* Sends the daemon an absolute path to write. */
static void step_send_path(char **a)
{
	char request[4096];
	char cwd[2048];
	if (!getcwd(cwd, sizeof cwd))
		die("getcwd", NULL);
	snprintf(request, sizeof request, "P%s/%s", cwd, a[1]);
	ask_daemon(a[0], request, -1);
}

/* Attaches IMAGE to a free loop device, writes TEXT to the block device (the loop driver's
 * thread writes IMAGE), detaches. */
static void step_loop_write(char **a)
{
	int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (control < 0)
		die("open", "/dev/loop-control");
	int number_free = ioctl(control, LOOP_CTL_GET_FREE);
	if (number_free < 0)
		die("LOOP_CTL_GET_FREE", NULL);
	char device[64];
	snprintf(device, sizeof device, "/dev/loop%d", number_free);
	int loop = open(device, O_RDWR | O_CLOEXEC);
	int image = open(a[0], O_RDWR | O_CLOEXEC);
	if (loop < 0 || image < 0)
		die("open", loop < 0 ? device : a[0]);
	if (ioctl(loop, LOOP_SET_FD, image) < 0)
		die("LOOP_SET_FD", device);
	close(image);
	char block[512];
	memset(block, 0, sizeof block);
	memcpy(block, a[1], strlen(a[1]) < sizeof block ? strlen(a[1]) : sizeof block);
	if (pwrite(loop, block, sizeof block, 0) != (ssize_t)sizeof block || fsync(loop) < 0)
		die("write", device);
	if (ioctl(loop, LOOP_CLR_FD, 0) < 0)
		die("LOOP_CLR_FD", device);
	close(loop);
	close(control);
}

/* ---- the fd swapped under a write ---- */

struct swap {
	int target;
	int real;
	int decoy;
	volatile int stop;
};

static void *swap_fds(void *argument)
{
	struct swap *swap = argument;
	while (!swap->stop) {
		dup2(swap->decoy, swap->target);
		dup2(swap->real, swap->target);
	}
	return NULL;
}

/* A thread dup2s DECOY over the fd another thread writes TEXT to REAL through, ROUNDS times:
 * some writes reach REAL while the fd names DECOY at the syscall's exit. Both files exist before
 * and are opened without O_TRUNC (the open itself changes nothing). */
static void step_swap_write(char **a)
{
	struct swap swap = { .target = 40, .stop = 0 };
	swap.real = open(a[0], O_WRONLY | O_CLOEXEC);
	swap.decoy = open(a[1], O_WRONLY | O_CLOEXEC);
	if (swap.real < 0 || swap.decoy < 0)
		die("open", a[0]);
	if (dup2(swap.real, swap.target) < 0)
		die("dup2", NULL);
	pthread_t thread;
	if (pthread_create(&thread, NULL, swap_fds, &swap) != 0)
		die("pthread_create", NULL);
	size_t len = strlen(a[2]);
	for (int i = 0; i < number(a[3]); i++)
		(void)!pwrite(swap.target, a[2], len, 0);
	swap.stop = 1;
	pthread_join(thread, NULL);
}

struct stalled_swap {
	int uffd;
	int target;
	int decoy;
	char *page;
	const char *text;
	/* Swap by close(2) then F_DUPFD rather than by dup2. */
	int by_close;
};

/* The userfaultfd handler: the writer is inside its write now, past the kernel's fdget of the
 * target fd. Swap DECOY over the fd, then let the copy go on. */
static void *swap_while_stalled(void *argument)
{
	struct stalled_swap *swap = argument;
	struct uffd_msg message;
	if (read(swap->uffd, &message, sizeof message) != sizeof message)
		die("read", "userfaultfd");
	if (message.event != UFFD_EVENT_PAGEFAULT)
		die("unexpected userfaultfd event", NULL);
	if (swap->by_close) {
		if (close(swap->target) < 0 || fcntl(swap->decoy, F_DUPFD, swap->target) != swap->target)
			die("close and F_DUPFD", NULL);
	} else if (dup2(swap->decoy, swap->target) < 0) {
		die("dup2", NULL);
	}
	long page_size = sysconf(_SC_PAGESIZE);
	char *source = aligned_alloc(page_size, page_size);
	if (!source)
		die("aligned_alloc", NULL);
	memset(source, '.', page_size);
	memcpy(source, swap->text, strlen(swap->text));
	struct uffdio_copy copy = {
		.dst = (unsigned long)swap->page,
		.src = (unsigned long)source,
		.len = page_size,
	};
	if (ioctl(swap->uffd, UFFDIO_COPY, &copy) < 0)
		die("UFFDIO_COPY", NULL);
	return NULL;
}

/* One O_DIRECT write of a page starting with TEXT to REAL through fd 40, from a buffer whose page
 * is missing under a userfaultfd: the kernel stalls inside the write, after it took the file
 * from the fd table, while another thread dup2s DECOY over fd 40. The write lands in REAL and
 * dirties no page; at the syscall's exit the fd names DECOY. REAL must hold a page already (the
 * write overwrites it in place). Needs root (a userfaultfd that catches kernel copies). */
static void stalled_write(char **a, int by_close)
{
	struct stalled_swap swap = { .target = 40, .text = a[2], .by_close = by_close };
	int real = open(a[0], O_WRONLY | O_DIRECT | O_CLOEXEC);
	swap.decoy = open(a[1], O_WRONLY | O_CLOEXEC);
	if (real < 0 || swap.decoy < 0)
		die("open", a[0]);
	if (dup2(real, swap.target) < 0)
		die("dup2", NULL);
	long page_size = sysconf(_SC_PAGESIZE);
	swap.uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	if (swap.uffd < 0)
		die("userfaultfd", NULL);
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(swap.uffd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API", NULL);
	swap.page = mmap(NULL, page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (swap.page == MAP_FAILED)
		die("mmap", NULL);
	struct uffdio_register region = {
		.range = { .start = (unsigned long)swap.page, .len = page_size },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(swap.uffd, UFFDIO_REGISTER, &region) < 0)
		die("UFFDIO_REGISTER", NULL);
	pthread_t thread;
	if (pthread_create(&thread, NULL, swap_while_stalled, &swap) != 0)
		die("pthread_create", NULL);
	if (pwrite(swap.target, swap.page, page_size, 0) != page_size)
		die("pwrite", a[0]);
	pthread_join(thread, NULL);
}

static void step_stalled_swap_write(char **a)
{
	stalled_write(a, 0);
}

/* The same, the other thread swapping by close(40) and then F_DUPFD of DECOY at 40. */
static void step_stalled_close_write(char **a)
{
	stalled_write(a, 1);
}

static void *wait_for_stop(void *argument)
{
	while (!*(volatile int *)argument)
		sleep_ms(1);
	return NULL;
}

/* Writes TEXT to PATH through fd 50 and closes it with close_range(50, 50) while a second thread
 * shares the fd table: a range closed in a shared table is not walked by the tracer. */
static void step_close_range_shared(char **a)
{
	int fd = open(a[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || dup2(fd, 50) < 0)
		die("open", a[0]);
	close(fd);
	write_all(50, a[1], strlen(a[1]), a[0]);
	int stop = 0;
	pthread_t thread;
	if (pthread_create(&thread, NULL, wait_for_stop, &stop) != 0)
		die("pthread_create", NULL);
	if (syscall(SYS_close_range, 50U, 50U, 0U) < 0)
		die("close_range", NULL);
	stop = 1;
	pthread_join(thread, NULL);
}

/* Outside the tree: waits for PATH to reach SIZE bytes, then keeps changing its last byte for MS
 * milliseconds. */
static void step_toucher(char **a)
{
	struct stat st;
	while (stat(a[0], &st) < 0 || st.st_size < atol(a[1]))
		sleep_ms(1);
	int fd = open(a[0], O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die("open", a[0]);
	for (int i = 0; i < number(a[2]); i++) {
		char byte = (char)('a' + i % 26);
		if (pwrite(fd, &byte, 1, st.st_size - 1) != 1)
			die("pwrite", a[0]);
		sleep_ms(1);
	}
	close(fd);
}

/* Writes SIZE bytes (MiB) to PATH. */
static void step_write_big(char **a)
{
	int fd = open(a[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("open", a[0]);
	char block[1 << 16];
	memset(block, 'b', sizeof block);
	for (long i = 0; i < atol(a[1]) * 16; i++)
		write_all(fd, block, sizeof block, a[0]);
	close(fd);
}

/* COUNT children, PARALLEL at a time, each exec'ing this helper with ARGS arguments of LEN bytes
 * (the `ignore` step drops them). */
static void step_exec_storm(char **a)
{
	int count = number(a[0]), parallel = number(a[1]), args = number(a[2]), len = number(a[3]);
	char **argv = calloc((size_t)args + 3, sizeof *argv);
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n < 0)
		die("readlink", "/proc/self/exe");
	self[n] = 0;
	argv[0] = self;
	argv[1] = "ignore";
	for (int i = 0; i < args; i++) {
		argv[i + 2] = malloc((size_t)len + 1);
		memset(argv[i + 2], 'a' + i % 26, (size_t)len);
		argv[i + 2][len] = 0;
	}
	int running = 0;
	for (int i = 0; i < count; i++) {
		if (running == parallel) {
			if (wait(NULL) < 0)
				die("wait", NULL);
			running--;
		}
		pid_t child = fork();
		if (child < 0)
			die("fork", NULL);
		if (child == 0) {
			execv(self, argv);
			_exit(99);
		}
		running++;
	}
	while (running-- > 0)
		wait(NULL);
}

/* ---- the tracer and its key: what the command may try against oci-attest, its parent ----
 * Each attempt appends "ROUTE: done" or "ROUTE: denied (why)" to tamper.log in the working
 * directory and carries on: a refused attempt is the expected outcome for an unprivileged
 * command, not a failed test step. */

static void outcome(const char *route, int done, const char *why)
{
	char line[512];
	int len = done ? snprintf(line, sizeof line, "%s: done\n", route)
		       : snprintf(line, sizeof line, "%s: denied (%s)\n", route, why);
	/* A setuid helper may create it: whoever runs next must still be able to add to it. */
	int fd = open("tamper.log", O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
	if (fd >= 0 && fchmod(fd, 0666) < 0)
		die("fchmod", "tamper.log");
	if (fd < 0)
		fd = open("tamper.log", O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		die("open", "tamper.log");
	write_all(fd, line, (size_t)len, "tamper.log");
	close(fd);
}

static void attempt(const char *route, int done)
{
	outcome(route, done, strerror(errno));
}

/* The start of PID's first mapping (from /proc/PID/maps), or 0x400000 if that is unreadable. */
static unsigned long first_mapping(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/maps", pid);
	FILE *maps = fopen(path, "re");
	unsigned long start = 0x400000;
	if (maps) {
		if (fscanf(maps, "%lx", &start) != 1)
			start = 0x400000;
		fclose(maps);
	}
	return start;
}

static int try_read(const char *path)
{
	char buffer[64];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int done = fd >= 0 && read(fd, buffer, sizeof buffer) >= 0;
	attempt("read", done);
	if (fd >= 0)
		close(fd);
	return done;
}

/* Opens PATH and reads from it. */
static void step_try_read(char **a) { try_read(a[0]); }

/* The same, and exits 1 when denied (for a helper run by try-run). */
static void step_read_or_fail(char **a)
{
	if (!try_read(a[0]))
		exit(1);
}

/* Opens /proc/PARENT/NAME and reads it (mem: at the parent's first mapping). */
static void step_try_read_parent(char **a)
{
	pid_t parent = getppid();
	char path[64], buffer[64];
	snprintf(path, sizeof path, "/proc/%d/%s", parent, a[0]);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t at = strcmp(a[0], "mem") == 0 ? (off_t)first_mapping(parent) : 0;
	int done = fd >= 0 && pread(fd, buffer, sizeof buffer, at) > 0;
	attempt(a[0], done);
	if (fd >= 0)
		close(fd);
}

/* Sends SIGNAL (STOP, KILL, TERM) to the parent; a stopped parent is continued 200 ms later. */
static void step_signal_parent(char **a)
{
	int signal = strcmp(a[0], "STOP") == 0 ? SIGSTOP : strcmp(a[0], "KILL") == 0 ? SIGKILL : SIGTERM;
	pid_t parent = getppid();
	int done = kill(parent, signal) == 0;
	attempt(a[0], done);
	if (done && signal == SIGSTOP) {
		sleep_ms(200);
		kill(parent, SIGCONT);
	}
}

/* Reads and sets again the parent's core-size limit. */
static void step_prlimit_parent(char **a)
{
	(void)a;
	struct rlimit limit;
	pid_t parent = getppid();
	int done = prlimit(parent, RLIMIT_CORE, NULL, &limit) == 0 &&
		   prlimit(parent, RLIMIT_CORE, &limit, NULL) == 0;
	attempt("prlimit", done);
}

/* Attaches to the parent without stopping it (the attachment ends when this process exits). */
static void step_ptrace_parent(char **a)
{
	(void)a;
	attempt("ptrace", ptrace(PTRACE_SEIZE, getppid(), 0, 0) == 0);
}

/* Reads 16 bytes of the parent's memory at its first mapping. */
static void step_vm_read_parent(char **a)
{
	(void)a;
	pid_t parent = getppid();
	char buffer[16];
	struct iovec local = { buffer, sizeof buffer };
	struct iovec remote = { (void *)first_mapping(parent), sizeof buffer };
	attempt("process_vm_readv", process_vm_readv(parent, &local, 1, &remote, 1, 0) > 0);
}

/* Takes a copy of one of the parent's descriptors through a pidfd. */
static void step_pidfd_getfd_parent(char **a)
{
	(void)a;
	int pidfd = (int)syscall(SYS_pidfd_open, getppid(), 0);
	int done = 0;
	if (pidfd >= 0) {
		for (int fd = 0; fd < 64 && !done; fd++) {
			int copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
			if (copy >= 0) {
				done = 1;
				close(copy);
			} else if (errno == EPERM) {
				break;
			}
		}
	}
	attempt("pidfd_getfd", done);
	if (pidfd >= 0)
		close(pidfd);
}

static long bpf(int command, union bpf_attr *attr)
{
	return syscall(SYS_bpf, command, attr, sizeof *attr);
}

/* Walks every BPF map of the system by id; from each map named TAMPERED (a tracer's record of
 * attacks: its parent's, and those of other runs) it tries to erase an entry: "bpf: done", and
 * "bpf-edit: denied (Operation not permitted)" for a frozen record (the zero key it erases is
 * never a real entry, so a concurrent run's record is left as it was). */
static void step_bpf_walk(char **a)
{
	(void)a;
	union bpf_attr attr;
	memset(&attr, 0, sizeof attr);
	int walked = 0;
	while (bpf(BPF_MAP_GET_NEXT_ID, &attr) == 0) {
		unsigned int id = attr.next_id;
		memset(&attr, 0, sizeof attr);
		attr.map_id = id;
		int fd = (int)bpf(BPF_MAP_GET_FD_BY_ID, &attr);
		if (fd >= 0) {
			walked++;
			struct bpf_map_info info;
			memset(&info, 0, sizeof info);
			memset(&attr, 0, sizeof attr);
			attr.info.bpf_fd = (unsigned int)fd;
			attr.info.info_len = sizeof info;
			attr.info.info = (unsigned long)&info;
			if (bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) == 0 && strcmp(info.name, "TAMPERED") == 0) {
				char key[64];
				memset(key, 0, sizeof key);
				memset(&attr, 0, sizeof attr);
				attr.map_fd = (unsigned int)fd;
				attr.key = (unsigned long)key;
				attempt("bpf-edit", bpf(BPF_MAP_DELETE_ELEM, &attr) == 0);
			}
			close(fd);
		}
		memset(&attr, 0, sizeof attr);
		attr.start_id = id;
	}
	attempt("bpf", walked > 0);
}

/* Mounts a tmpfs on DIR (made here), then asks for a free loop device. */
static void step_mount_and_loop(char **a)
{
	if (mkdir(a[0], 0755) < 0)
		die("mkdir", a[0]);
	int mounted = mount("none", a[0], "tmpfs", 0, NULL) == 0;
	attempt("mount", mounted);
	if (mounted)
		umount(a[0]);
	int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	attempt("loop", control >= 0 && ioctl(control, LOOP_CTL_GET_FREE) >= 0);
	if (control >= 0)
		close(control);
}

/* Runs PROGRAM ARGS... as a child and waits: "PROGRAM: done" when it exits 0. */
static void step_try_run(char **a)
{
	pid_t child = fork();
	if (child < 0)
		die("fork", NULL);
	if (child == 0) {
		execv(a[0], a);
		_exit(127);
	}
	int status;
	if (waitpid(child, &status, 0) < 0)
		die("waitpid", a[0]);
	char why[32];
	snprintf(why, sizeof why, "exit status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	outcome(a[0], WIFEXITED(status) && WEXITSTATUS(status) == 0, why);
}

static void step_ignore(char **a) { (void)a; }

static void step_exec(char **a)
{
	execv(a[0], a + 1);
	die("execv", a[0]);
}

struct step {
	const char *name;
	int args; /* -1: takes the rest of the command line (and never returns to the loop) */
	void (*run)(char **);
};

static const struct step steps[] = {
	{ "mkdir", 1, step_mkdir },
	{ "mkdirs", 1, step_mkdirs },
	{ "chdir", 1, step_chdir },
	{ "chroot", 1, step_chroot },
	{ "symlink", 2, step_symlink },
	{ "write", 2, step_write },
	{ "rename", 2, step_rename },
	{ "exchange", 2, step_exchange },
	{ "link", 2, step_link },
	{ "unlink", 1, step_unlink },
	{ "truncate", 2, step_truncate },
	{ "sleep", 1, step_sleep },
	{ "open-dir", 2, step_open_dir },
	{ "dup2", 2, step_dup2 },
	{ "open-path", 2, step_open_path },
	{ "mknod", 1, step_mknod },
	{ "close", 1, step_close },
	{ "write-at", 3, step_write_at },
	{ "fchdir", 1, step_fchdir },
	{ "open-rdwr", 1, step_open_rdwr },
	{ "flock-write", 3, step_flock_write },
	{ "tmpfile-link", 3, step_tmpfile_link },
	{ "handle-write", 2, step_handle_write },
	{ "iouring-write", 2, step_iouring_write },
	{ "compat-write", 2, step_compat_write },
	{ "deep-write", 3, step_deep_write },
	{ "openat2-in-root", 3, step_openat2_in_root },
	{ "clone-fs-chdir", 1, step_clone_fs_chdir },
	{ "clone-files-open-dir", 2, step_clone_files_open_dir },
	{ "fd-write", 2, step_fd_write },
	{ "fd-mmap", 2, step_fd_mmap },
	{ "fd-pwritev2", 2, step_fd_pwritev2 },
	{ "fd-mprotect", 2, step_fd_mprotect },
	{ "fd-aio", 2, step_fd_aio },
	{ "fd-sendfile", 2, step_fd_sendfile },
	{ "fd-copy-file-range", 2, step_fd_copy_file_range },
	{ "fd-splice", 2, step_fd_splice },
	{ "fd-ftruncate", 2, step_fd_ftruncate },
	{ "fd-fallocate", 2, step_fd_fallocate },
	{ "proc-fd-sibling", 2, step_proc_fd_sibling },
	{ "bind-private", 2, step_bind_private },
	{ "lease-swap-open", 3, step_lease_swap_open },
	{ "exec-swapped-argv", 3, step_exec_swapped_argv },
	{ "exec-nonresident", 2, step_exec_nonresident },
	{ "orphan", 3, step_orphan },
	{ "daemon", 4, step_daemon },
	{ "pending-flood", 3, step_pending_flood },
	{ "many-fds", 2, step_many_fds },
	{ "ptrace-write", 3, step_ptrace_write },
	{ "replace-program", 1, step_replace_program },
	{ "churn-own", 2, step_churn_own },
	{ "churn-stranger", 2, step_churn_stranger },
	{ "steal-inode", 1, step_steal_inode },
	{ "run-child", 1, step_run_child },
	{ "copy", 2, step_copy },
	{ "rewrite-in-place", 2, step_rewrite_in_place },
	{ "recreate-same-inode", 2, step_recreate_same_inode },
	{ "fileless-exec", 2, step_fileless_exec },
	{ "serve", 4, step_serve },
	{ "serve-direct", 4, step_serve_direct },
	{ "serve-fd", 3, step_serve_fd },
	{ "receive-fd", 2, step_receive_fd },
	{ "send-fd", 3, step_send_fd },
	{ "pass-own-fds", 1, step_pass_own_fds },
	{ "pass-own-fds-mmsg", 2, step_pass_own_fds_mmsg },
	{ "send-path", 2, step_send_path },
	{ "loop-write", 2, step_loop_write },
	{ "swap-write", 4, step_swap_write },
	{ "stalled-swap-write", 3, step_stalled_swap_write },
	{ "stalled-close-write", 3, step_stalled_close_write },
	{ "close-range-shared", 2, step_close_range_shared },
	{ "toucher", 3, step_toucher },
	{ "write-big", 2, step_write_big },
	{ "exec-storm", 4, step_exec_storm },
	{ "try-read", 1, step_try_read },
	{ "read-or-fail", 1, step_read_or_fail },
	{ "try-read-parent", 1, step_try_read_parent },
	{ "signal-parent", 1, step_signal_parent },
	{ "prlimit-parent", 0, step_prlimit_parent },
	{ "ptrace-parent", 0, step_ptrace_parent },
	{ "vm-read-parent", 0, step_vm_read_parent },
	{ "pidfd-getfd-parent", 0, step_pidfd_getfd_parent },
	{ "bpf-walk", 0, step_bpf_walk },
	{ "mount-and-loop", 1, step_mount_and_loop },
	{ "try-run", -1, step_try_run },
	{ "ignore", -1, step_ignore },
	{ "exec", -1, step_exec },
};

int main(int argc, char **argv)
{
	int i = 1;
	if (argc > 1 && strcmp(argv[1], "record-argv") == 0) {
		step_record_argv(argv + 2, argc, argv);
		return 0;
	}
	while (i < argc) {
		const struct step *step = NULL;
		for (size_t s = 0; s < sizeof steps / sizeof *steps; s++)
			if (strcmp(steps[s].name, argv[i]) == 0)
				step = &steps[s];
		if (!step) {
			fprintf(stderr, "attacker: unknown step %s\n", argv[i]);
			return 98;
		}
		if (step->args < 0) {
			step->run(argv + i + 1);
			return 0;
		}
		if (i + step->args >= argc) {
			fprintf(stderr, "attacker: %s needs %d arguments\n", step->name, step->args);
			return 98;
		}
		step->run(argv + i + 1);
		i += 1 + step->args;
		if (i < argc) {
			if (strcmp(argv[i], "+") != 0) {
				fprintf(stderr, "attacker: expected + before %s\n", argv[i]);
				return 98;
			}
			i++;
		}
	}
	return 0;
}
