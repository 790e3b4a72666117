#define _GNU_SOURCE
#include "peer_process.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// The executable's read-only segments, found once: releasing them is then only madvise calls, which a signal
// handler may make.
static uintptr_t ranges[16][2];
static int range_count = -1;
// .rodata, which the linker put in a writable segment (some of it is relocated at load): only its pages that
// are still the file's (never written) are released, page by page as /proc/self/pagemap tells.
static uintptr_t rodata_start, rodata_end;
static uintptr_t page_size = 4096;

// Finds .rodata in the executable's section headers (not loaded: read from /proc/self/exe).
static void find_rodata(uintptr_t base) {
    int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ElfW(Ehdr) header;
    ElfW(Shdr) names, section;
    char name[8];
    if (pread(fd, &header, sizeof header, 0) != sizeof header || header.e_shentsize != sizeof section ||
        pread(fd, &names, sizeof names, (off_t)(header.e_shoff + (ElfW(Off))header.e_shstrndx * sizeof names)) != sizeof names) {
        close(fd);
        return;
    }
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < header.e_shnum; i++) {
        if (pread(fd, &section, sizeof section, (off_t)(header.e_shoff + (ElfW(Off))i * sizeof section)) != sizeof section) break;
        if (pread(fd, name, sizeof name, (off_t)(names.sh_offset + section.sh_name)) != sizeof name) continue;
        if (memcmp(name, ".rodata", 8) != 0 || section.sh_type != SHT_PROGBITS) continue;
        rodata_start = (base + section.sh_addr + page - 1) & ~(page - 1);
        rodata_end = (base + section.sh_addr + section.sh_size) & ~(page - 1);
        break;
    }
    close(fd);
}

// Releases the pages of [start, end) that are present and still the file's page (pagemap bit 61, "file page";
// a page that was written is a private anonymous copy and stays).
static int release_file_pages(uintptr_t start, uintptr_t end) {
    if (end <= start) return 0;
    uintptr_t page = page_size;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    uint64_t entries[512];
    uintptr_t run = 0;
    for (uintptr_t at = start; at < end;) {
        size_t count = (end - at) / page < 512 ? (end - at) / page : 512;
        ssize_t got = pread(fd, entries, count * 8, (off_t)(at / page * 8));
        if (got <= 0) break;
        for (size_t i = 0; i < (size_t)got / 8; i++, at += page) {
            int file_page = (entries[i] >> 63 & 1) && (entries[i] >> 61 & 1);
            if (file_page && !run) run = at;
            if (!file_page && run) {
                madvise((void *)run, at - run, MADV_DONTNEED);
                run = 0;
            }
        }
    }
    if (run) madvise((void *)run, end - run, MADV_DONTNEED);
    close(fd);
    return 0;
}

static int find_segments(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    uintptr_t page = page_size = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t relro_start = 0, relro_end = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_GNU_RELRO) {
            relro_start = (info->dlpi_addr + ph->p_vaddr) & ~(page - 1);
            relro_end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + page - 1) & ~(page - 1);
        }
    }
    range_count = 0;
    for (int i = 0; i < info->dlpi_phnum && range_count < 16; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W)) continue;
        // Whole pages inside the segment only: a page shared with a neighbouring segment is left alone.
        uintptr_t start = (info->dlpi_addr + ph->p_vaddr + page - 1) & ~(page - 1);
        uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_filesz) & ~(page - 1);
        if (end <= start || (start < relro_end && end > relro_start)) continue;
        ranges[range_count][0] = start;
        ranges[range_count][1] = end;
        range_count++;
    }
    find_rodata(info->dlpi_addr);
    return 1;  // the first object is the executable itself: stop after it
}

static long release(void) {
    long released = 0;
    for (int i = 0; i < range_count; i++) {
        if (madvise((void *)ranges[i][0], ranges[i][1] - ranges[i][0], MADV_DONTNEED) != 0) return -1;
        released += (long)(ranges[i][1] - ranges[i][0]);
    }
    if (release_file_pages(rodata_start, rodata_end) != 0) return -1;
    return released + (long)(rodata_end - rodata_start);
}

int peer_release_free_heap(void) { return malloc_trim(0); }

long peer_release_executable_pages(void) {
    if (range_count < 0) dl_iterate_phdr(find_segments, NULL);
    return release();
}

static void on_signal(int signo) {
    (void)signo;
    int saved = errno;
    release();
    errno = saved;
}

int peer_release_executable_pages_on_signal(int signo) {
    if (range_count < 0) dl_iterate_phdr(find_segments, NULL);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}
