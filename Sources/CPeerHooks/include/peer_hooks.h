#ifndef PEER_HOOKS_H
#define PEER_HOOKS_H

/// Makes `hook` the Swift runtime's global enqueue hook (swift_task_enqueueGlobal_hook), where every job of
/// Swift concurrency that has no executor of its own goes. Returns 1, or 0 when another hook is already set.
/// The symbol is set directly, not looked up with dlsym: a statically linked runtime does not export it.
int peer_install_enqueue_global_hook(const void *hook);

#endif
