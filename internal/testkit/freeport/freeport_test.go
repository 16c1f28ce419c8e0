package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestPick(t *testing.T) {
	lo, hi := pickRange(2)
	for _, n := range []int{1, 2, 3} {
		port, err := Pick(n)
		if err != nil {
			t.Fatalf("Pick(%d): %v", n, err)
		}
		if hi > lo && (port < lo || port+n-1 >= hi+1) {
			t.Errorf("Pick(%d) = %d; want the run within [%d, %d), below the ephemeral range", n, port, lo, hi+1)
		}
		// Every port of the run is free to bind.
		for i := range n {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i)))
			if err != nil {
				t.Fatalf("Pick(%d) = %d: port %d: %v", n, port, port+i, err)
			}
			l.Close()
		}
	}
	if _, err := Pick(0); err == nil {
		t.Error("Pick(0) succeeded; want an error")
	}
}

// A port that is taken is never returned.
func TestPickSkipsTaken(t *testing.T) {
	port, err := Pick(1)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if p, ok := tryRun(port, 1); ok {
		t.Errorf("tryRun(%d) = %d, true on a taken port", port, p)
	}
}
