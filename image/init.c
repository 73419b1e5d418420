/* The init of a qemu machine's initramfs (built by image/_initramfs.py; compiled with gcc -static).
 *
 * No shell, no scripts: it mounts devtmpfs, proc and sysfs, loads the kernel modules listed in /init.conf in
 * that order (dependencies first), finds the partition whose GPT name the kernel command line gives as
 * graven.slot=NAME (or the whole disk graven.root=NAME names: the installer image, e.g. vdb), mounts it read-only
 * as the new root (a squashfs), moves /dev, /proc and /sys there, puts tmpfs on /run, /tmp and /machine, binds
 * the initramfs's /tools (the disk tools the install runs: sfdisk, mkfs.ext4) on /run/tools, switches root and
 * executes the agent as PID 1 with the argv and environment of /init.conf. Any failure is printed on the console and init exits: the kernel panics, which the host reads
 * (pvpanic) as a failed boot.
 *
 * The agent's environment gets GRAVEN_INITRAMFS_NS=START,EXEC (CLOCK_MONOTONIC ns) for the boot trace.
 * /init.conf: one item per line, "m PATH" a module, "a ARG" the next argument, "e NAME=VALUE" the environment.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_ITEMS 256
#define WAIT_DEVICE_S 60

static void say(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    dprintf(2, "graven-init: %.*s", n, buf);
}

static int fail(const char *what) {
    say("%s: %s", what, strerror(errno));
    return 1;
}

static char *slurp(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) buf = realloc(buf, cap *= 2);
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got <= 0) break;
        len += (size_t)got;
    }
    close(fd);
    buf[len] = 0;
    return buf;
}

/* the value of NAME=VALUE among the whitespace-separated words of the kernel command line */
static int cmdline_value(const char *cmdline, const char *name, char *out, size_t size) {
    size_t nlen = strlen(name);
    for (const char *p = cmdline; *p;) {
        while (*p == ' ' || *p == '\n') p++;
        const char *end = p;
        while (*end && *end != ' ' && *end != '\n') end++;
        if ((size_t)(end - p) > nlen && !strncmp(p, name, nlen) && p[nlen] == '=') {
            size_t vlen = (size_t)(end - p) - nlen - 1;
            if (vlen >= size) return -1;
            memcpy(out, p + nlen + 1, vlen);
            out[vlen] = 0;
            return 0;
        }
        p = end;
    }
    return -1;
}

/* the /dev node of the partition whose GPT name is NAME (PARTNAME= in its uevent) */
static int find_partition(const char *name, char *dev, size_t size) {
    DIR *d = opendir("/sys/class/block");
    if (!d) return -1;
    struct dirent *e;
    int found = -1;
    while (found && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300];
        snprintf(path, sizeof path, "/sys/class/block/%s/uevent", e->d_name);
        char *uevent = slurp(path);
        if (!uevent) continue;
        char want[128];
        snprintf(want, sizeof want, "PARTNAME=%s\n", name);
        char *hit = strstr(uevent, want);
        if (hit && (hit == uevent || hit[-1] == '\n')) {
            snprintf(dev, size, "/dev/%s", e->d_name);
            found = 0;
        }
        free(uevent);
    }
    closedir(d);
    return found;
}

/* the /dev node of the whole disk NAME (e.g. vdb), once the kernel has it */
static int find_disk(const char *name, char *dev, size_t size) {
    char path[300];
    snprintf(path, sizeof path, "/sys/class/block/%s/dev", name);
    if (access(path, F_OK)) return -1;
    snprintf(dev, size, "/dev/%s", name);
    return 0;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double now(void) { return (double)now_ns() / 1e9; }

int main(void) {
    static char *argv[MAX_ITEMS + 1], *envp[MAX_ITEMS + 2];
    static char timings[96];
    int argc = 0, envc = 0;
    long long started_ns = now_ns();
    if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") && errno != EBUSY) return fail("mount /dev");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) return fail("mount /proc");
    if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) return fail("mount /sys");
    say("started at %.3f s of the kernel's clock", now());

    char *conf = slurp("/init.conf");
    if (!conf) return fail("read /init.conf");
    for (char *line = strtok(conf, "\n"); line; line = strtok(NULL, "\n")) {
        if (strlen(line) < 3 || line[1] != ' ') continue;
        char *value = line + 2;
        if (line[0] == 'm') {
            int fd = open(value, O_RDONLY | O_CLOEXEC);
            if (fd < 0) return fail(value);
            if (syscall(SYS_finit_module, fd, "", 0) && errno != EEXIST) return fail(value);
            close(fd);
        } else if (line[0] == 'a' && argc < MAX_ITEMS) {
            argv[argc++] = value;
        } else if (line[0] == 'e' && envc < MAX_ITEMS) {
            envp[envc++] = value;
        }
    }
    if (!argc) {
        say("/init.conf names no program to run");
        return 1;
    }
    say("modules loaded at %.3f s", now());

    char *cmdline = slurp("/proc/cmdline");
    char slot[64], disk[64], dev[300];
    int whole = cmdline && !cmdline_value(cmdline, "graven.root", disk, sizeof disk) && !strchr(disk, '/');
    if (!whole && (!cmdline || cmdline_value(cmdline, "graven.slot", slot, sizeof slot))) {
        say("the kernel command line names no graven.slot=PARTITION (nor graven.root=DISK)");
        return 1;
    }
    if (whole) snprintf(slot, sizeof slot, "the installer image");
    double deadline = now() + WAIT_DEVICE_S;
    while (whole ? find_disk(disk, dev, sizeof dev) : find_partition(slot, dev, sizeof dev)) {
        if (now() > deadline) {
            say("no %s named %s appeared in %d s", whole ? "disk" : "partition", whole ? disk : slot, WAIT_DEVICE_S);
            return 1;
        }
        usleep(20000);
    }
    if (mount(dev, "/newroot", "squashfs", MS_RDONLY, NULL)) return fail(dev);
    say("%s (%s) mounted read-only as / at %.3f s", slot, dev, now());

    static const char *moved[] = {"/dev", "/proc", "/sys"};
    for (unsigned i = 0; i < sizeof moved / sizeof *moved; i++) {
        char target[64];
        snprintf(target, sizeof target, "/newroot%s", moved[i]);
        if (mount(moved[i], target, NULL, MS_MOVE, NULL)) return fail(target);
    }
    static const char *tmpfs[] = {"/newroot/run", "/newroot/tmp", "/newroot/machine"};
    for (unsigned i = 0; i < sizeof tmpfs / sizeof *tmpfs; i++)
        if (mount("tmpfs", tmpfs[i], "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")) return fail(tmpfs[i]);
    struct stat tools;
    if (!stat("/tools", &tools) && S_ISDIR(tools.st_mode)) {
        if (mkdir("/newroot/run/tools", 0755)) return fail("mkdir /newroot/run/tools");
        if (mount("/tools", "/newroot/run/tools", NULL, MS_BIND | MS_REC, NULL)) return fail("bind /tools");
    }
    if (chdir("/newroot")) return fail("chdir /newroot");
    if (mount(".", "/", NULL, MS_MOVE, NULL)) return fail("move the new root to /");
    if (chroot(".")) return fail("chroot");
    if (chdir("/")) return fail("chdir /");
    /* the kernel's monotonic clock when init started and when it hands over: the boot trace's kernel and
       initramfs spans (the agent's events are on the same clock) */
    snprintf(timings, sizeof timings, "GRAVEN_INITRAMFS_NS=%lld,%lld", started_ns, now_ns());
    envp[envc++] = timings;
    execve(argv[0], argv, envp);
    return fail(argv[0]);
}
