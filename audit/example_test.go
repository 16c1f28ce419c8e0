package audit_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/onbehalf-dev/onbehalf/audit"
)

func ExampleAuditor_Write() {
	var out bytes.Buffer
	a, err := audit.New(audit.DefaultConfig(), audit.Options{Stdout: &out})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	err = a.Write(&audit.Record{
		Time:       time.Date(2026, 6, 18, 6, 0, 0, 0, time.UTC),
		Event:      audit.EventRequest,
		DecisionID: "d-1",
		User:       "alice",
		Method:     "GET",
		Host:       "graph.microsoft.com",
		Path:       "/v1.0/me?access_token=leaked",
		Decision:   audit.DecisionDeny,
		Status:     403,
		ErrorCode:  "policy_denied",
	})
	if errors.Is(err, audit.ErrUnavailable) && a.FailClosed() {
		fmt.Println("refuse the request: 503 audit_unavailable")
	}
	fmt.Print(out.String())
	// Output:
	// {"time":"2026-06-18T06:00:00.000000Z","event":"request","decision_id":"d-1","user":"alice","method":"GET","host":"graph.microsoft.com","path":"/v1.0/me?access_token=REDACTED","decision":"deny","status":403,"error_code":"policy_denied","seq":1,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000"}
}

func ExampleVerifyRotated() {
	dir, err := os.MkdirTemp("", "audit-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	cfg := audit.DefaultConfig()
	cfg.Sink, cfg.File.Path = audit.SinkFile, filepath.Join(dir, "audit.log")
	a, err := audit.New(cfg, audit.Options{})
	if err != nil {
		panic(err)
	}
	for _, ev := range []string{audit.EventStart, audit.EventRequest, audit.EventStop} {
		if err := a.Write(&audit.Record{Event: ev, User: "alice"}); err != nil {
			panic(err)
		}
	}
	a.Close()

	rep, err := audit.VerifyRotated(cfg.File.Path)
	fmt.Println(rep.Records, rep.Anchored, err)
	// Output:
	// 3 true <nil>
}

func ExampleRedactURL() {
	u, _ := url.Parse("https://api.example.com/x?code=abc&state=s1")
	fmt.Println(audit.RedactURL(u))
	// Output:
	// https://api.example.com/x?code=REDACTED&state=s1
}
