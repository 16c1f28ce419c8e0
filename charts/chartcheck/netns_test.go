//go:build integration

package chartcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// The Kubernetes tests start etcd, kube-apiserver and `onbehalf webhook`.
// An API server dials webhook Services by cluster IP, which is not on
// loopback: so that no dial can ever leave the machine, the whole test
// binary runs in a network namespace of its own whose only interface is
// lo (docs/security.md, invariant 17). The binary re-executes itself under
// `unshare --net` (as root; otherwise in a user namespace too, with
// --map-root-user) and, inside, brings lo up and refuses to run unless lo
// is the only interface and a non-loopback dial fails at once.

// netnsEnv marks the re-executed test binary.
const netnsEnv = "CHARTCHECK_IN_NETNS"

// isolatedProbe is a cluster IP of the test API server's service range:
// inside the namespace, dialling it must fail with "network unreachable"
// before a packet is sent.
const isolatedProbe = "10.96.0.1:443"

// enterNetns re-executes the test binary inside a new network namespace
// and returns its exit code with done set; inside the namespace it
// prepares lo and returns done unset.
func enterNetns() (code int, done bool) {
	if os.Getenv(netnsEnv) == "1" {
		if err := prepareNetns(); err != nil {
			fmt.Fprintf(os.Stderr, "chartcheck: network namespace: %v\n", err)
			return 1, true
		}
		return 0, false
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartcheck: the Kubernetes tests run in a network namespace of their own and need unshare (util-linux) and ip (iproute2):", err)
		return 1, true
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fmt.Fprintln(os.Stderr, "chartcheck: the Kubernetes tests need ip (iproute2) to bring up lo in their network namespace:", err)
		return 1, true
	}
	// The binary is built out here: inside, the module proxy is
	// unreachable.
	env := os.Environ()
	if os.Getenv("ONBEHALF_BIN") == "" {
		dir, err := os.MkdirTemp("", "chartcheck-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "chartcheck:", err)
			return 1, true
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "onbehalf")
		ctx, cancel := context.WithTimeout(context.Background(), binTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/onbehalf")
		cmd.Dir = filepath.Join("..", "..")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "chartcheck: build onbehalf: %v\n%s", err, out)
			return 1, true
		}
		env = append(env, "ONBEHALF_BIN="+bin)
	}
	args := []string{"--net"}
	if os.Geteuid() != 0 {
		args = append(args, "--map-root-user")
	}
	args = append(args, "--", os.Args[0])
	cmd := exec.Command(unshare, append(args, os.Args[1:]...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(env, netnsEnv+"=1")
	// unshare execs the test binary in place: if this process dies (go
	// test's timeout), so does the test binary, and its children die with
	// it (each has its own death signal).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		if ee.ExitCode() < 0 {
			fmt.Fprintf(os.Stderr, "chartcheck: test binary in the network namespace: %v\n", err)
			return 1, true
		}
		return ee.ExitCode(), true
	case err != nil:
		fmt.Fprintf(os.Stderr, "chartcheck: unshare --net: %v (run the tests as root, or where unprivileged user namespaces are allowed)\n", err)
		return 1, true
	}
	return 0, true
}

// prepareNetns brings lo up and checks the namespace is isolated.
func prepareNetns() error {
	if out, err := exec.Command("ip", "link", "set", "dev", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip link set dev lo up: %v: %s", err, bytes.TrimSpace(out))
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifc := range ifaces {
		if ifc.Name != "lo" || ifc.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("interface %s is present: refusing to start an API server that could dial out", ifc.Name)
		}
		if ifc.Flags&net.FlagUp == 0 {
			return errors.New("lo is down")
		}
	}
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.Dial("tcp", isolatedProbe)
	if err == nil {
		conn.Close()
		return fmt.Errorf("a dial to %s succeeded: the namespace is not isolated", isolatedProbe)
	}
	if !errors.Is(err, syscall.ENETUNREACH) {
		return fmt.Errorf("a dial to %s failed with %v; want network unreachable", isolatedProbe, err)
	}
	return nil
}
