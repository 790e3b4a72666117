#ifndef PEER_PROCESS_H
#define PEER_PROCESS_H

#include <stddef.h>

/// Makes `hook` the Swift runtime's global enqueue hook (swift_task_enqueueGlobal_hook), where every job of
/// Swift concurrency that has no executor of its own goes. Returns 1, or 0 when another hook is already set.
/// The symbol is set directly, not looked up with dlsym: a statically linked runtime does not export it.
int peer_install_enqueue_global_hook(const void *hook);

/// Unmaps from this process the pages of its executable's read-only segments (code, read-only data,
/// relocation records) and the pages of `.rodata` that are still the file's (the linker put `.rodata` in a
/// writable segment; pages relocated at load are private copies and stay) — never other writable data nor the
/// relocated read-only data (RELRO). The file's pages stay in the page cache; what runs again faults back in
/// from there. Start-up code then stops counting in the resident set of an idle daemon. Only async-signal-safe
/// calls after the first use. Returns the bytes of mappings looked at, or -1 with errno set.
long peer_release_executable_pages(void);

/// Releases them (as above) whenever the process gets `signo`. Returns 0, or -1 with errno set.
int peer_release_executable_pages_on_signal(int signo);

/// Returns the heap's free pages to the system (glibc malloc_trim): after a burst (a flood of connections, a
/// deploy's buffers) the resident set comes back down. 1 if memory was released.
int peer_release_free_heap(void);

#endif
