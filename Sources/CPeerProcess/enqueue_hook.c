#include "peer_process.h"

#include <stddef.h>

// Defined by the Swift runtime (libswift_Concurrency); a pointer to a swiftcc function, nil by default.
extern const void *swift_task_enqueueGlobal_hook;

int peer_install_enqueue_global_hook(const void *hook) {
    if (swift_task_enqueueGlobal_hook != NULL) return 0;
    swift_task_enqueueGlobal_hook = hook;
    return 1;
}
