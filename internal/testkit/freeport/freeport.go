// Package freeport picks loopback ports for test servers that run as
// child processes (Vault, Redis, the onbehalf binary) and must be told
// their port before they bind it.
//
// A port is free only until the child binds it. A port the kernel hands
// out on its own — a test's listener on port 0, any outgoing connection —
// always comes from the ephemeral range, so a port picked there by
// listening on port 0 and closing can be taken in that window by another
// test running in parallel (seen in CI: a Vault node's cluster listener
// failed to bind). Ports are therefore picked at random below that range
// when there is room, where nothing lands unasked.
//
// This package does not import testing; its functions are safe for
// concurrent use.
package freeport

import (
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// floor is the lowest port picked: above the ports of well-known services.
const floor = 10000

// attempts bounds the ports tried before Pick gives up.
const attempts = 50

// Pick returns a loopback port p such that p … p+n-1 were all free when it
// returned (n ≥ 1): some servers bind a second listener on the next port.
func Pick(n int) (int, error) {
	if n < 1 {
		return 0, errors.New("pick port: want at least one port")
	}
	lo, hi := pickRange(n)
	for range attempts {
		port := 0 // the kernel picks
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
		}
		if p, ok := tryRun(port, n); ok {
			return p, nil
		}
	}
	return 0, errors.New("pick port: no " + strconv.Itoa(n) + " adjacent free loopback ports")
}

// tryRun binds port (0: the kernel's choice) and the n-1 after it, closes
// them all and reports the first, or false when one was taken.
func tryRun(port, n int) (int, bool) {
	var open []net.Listener
	defer func() {
		for _, l := range open {
			_ = l.Close()
		}
	}()
	for i := range n {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i)))
		if err != nil {
			return 0, false
		}
		open = append(open, l)
		if i == 0 {
			port = l.Addr().(*net.TCPAddr).Port
		}
	}
	return port, true
}

// pickRange is where Pick picks the first of n ports: [lo, hi), so that
// all n lie below the ephemeral range; lo == hi when there is no room
// below it, and the kernel picks (port 0).
func pickRange(n int) (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first-n <= floor+1000 {
		return 0, 0
	}
	return floor, first - n + 1
}
