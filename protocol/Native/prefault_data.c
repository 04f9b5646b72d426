/*
 * Linked into each NativeAOT executable (vdev, fuse_launcher, passthrough) by Native.targets.
 *
 * Before main, the executable's writable segment (below it the relocation read-only part, excluded) is populated in one
 * madvise(MADV_POPULATE_WRITE) call. The .NET runtime's first act in main is to rehydrate its data into that segment
 * (StartupCodeHelpers.RehydrateData), which otherwise takes one page fault per page as it first writes each one; in a
 * virtual machine every such fault also pays for the trap into the hypervisor's paravirtual code. Populating the pages
 * in one call gives the process the same pages, zero-filled as the loader would leave them, without the faults.
 *
 * Nothing depends on it succeeding: on a kernel before 5.14 (EINVAL) or when memory is short (ENOMEM) the pages are
 * faulted in as before. It runs before any seccomp filter is loaded and makes no other call.
 */
#define _GNU_SOURCE
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static int populate_writable(struct dl_phdr_info *info, size_t size, void *unused)
{
    (void)size;
    (void)unused;
    const uintptr_t page = 4096;
    uintptr_t relro_end = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        /* Read-only once the loader has relocated it: MADV_POPULATE_WRITE would refuse the whole range. */
        if (ph->p_type == PT_GNU_RELRO) relro_end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz) & ~(page - 1);
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W) == 0) continue;
        uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(page - 1);
        uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + page - 1) & ~(page - 1);
        if (start < relro_end) start = relro_end;
        if (start < end) madvise((void *)start, end - start, MADV_POPULATE_WRITE);
    }
    /* glibc reports the executable first: stop there, the shared libraries are not the runtime's data. */
    return 1;
}

__attribute__((constructor)) static void populate_runtime_data(void)
{
    dl_iterate_phdr(populate_writable, NULL);
}
