// Package memtrim hands back memory that a long-running server touched only
// while it started.
//
// A Go binary runs every package's init function at start-up, and the
// sidecar then compiles its policy, parses its configuration and loads its
// keys. Each first touch of a code or read-only data page maps it, and the
// kernel maps its neighbours with it (fault-around, 64 KiB by default), so a
// freshly started sidecar has most of its 50 MB executable mapped although
// its request path uses a few megabytes of it. Those pages are clean copies
// of the file: [Release] unmaps them from this process with
// madvise(MADV_DONTNEED). They stay in the page cache, shared with every
// other process running the same binary, and a page the process touches
// again is mapped back by a minor fault, without reading the disk.
//
// Only mappings that are read-only, private and backed by the executable
// file, and that hold no private copy of any page, are released: advising
// MADV_DONTNEED on a page the process had modified would discard the change.
//
// Release is safe to call from any goroutine at any time; it is meant to be
// called once, when start-up is over.
package memtrim
