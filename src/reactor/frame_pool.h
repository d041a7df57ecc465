// Coroutine frame allocator: per-thread free lists by size class.
//
// Every Task's frame comes from here, so a coroutine started per I/O (or per request) costs no heap
// allocation once the pool is warm. Blocks are plain ::operator new memory, so a frame may be freed on
// another thread than the one that allocated it; it simply joins that thread's list.
#pragma once

#include <cstddef>

namespace tern::frame_pool {

void* allocate(size_t n);
void deallocate(void* p, size_t n) noexcept;

}  // namespace tern::frame_pool
