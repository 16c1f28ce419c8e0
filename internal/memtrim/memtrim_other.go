//go:build !linux

package memtrim

import "runtime/debug"

// Release returns the freed Go heap to the operating system. Unmapping the
// executable's pages is done on Linux only, so it always reports 0 bytes.
func Release() (int64, error) {
	debug.FreeOSMemory()
	return 0, nil
}
