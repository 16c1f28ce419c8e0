package sidecar

import (
	"context"
	"net/http/pprof"

	"crypto/x509"
	"encoding/json"
	"errors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"net/http"
	"time"

	"github.com/onbehalf-dev/onbehalf/injector/store"
)

// readyProbeTimeout bounds the store probe behind /readyz so a hung store
// makes the sidecar unready instead of hanging the kubelet's probe.
const readyProbeTimeout = 2 * time.Second

// check is one line of /readyz detail.
type check struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

type readiness struct {
	Ready          bool             `json:"ready"`
	PolicyRevision string           `json:"policy_revision,omitempty"`
	Checks         map[string]check `json:"checks"`
}

// adminHandler serves the admin endpoints. None of them changes state, and
// none returns a secret: the agent shares the pod's network namespace and
// can reach this listener.
func (s *Sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rd := s.readiness(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !rd.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rd)
	})
	mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(s.ca.CertPEM())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry(), promhttp.HandlerOpts{}))
	if s.cfg.Admin.Pprof {
		// Profiles reveal timing and memory, not secrets; they are still
		// off by default because the agent can reach this listener.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func (s *Sidecar) readiness(ctx context.Context) readiness {
	rd := readiness{Ready: true, Checks: map[string]check{}}
	add := func(name string, err error, detail string) {
		c := check{OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
			rd.Ready = false
		}
		rd.Checks[name] = c
	}

	st := s.policy.Status()
	rd.PolicyRevision = st.Revision
	switch {
	case !st.Ready:
		add("policy", errors.New("no policy loaded: "+st.LastError), "")
	case st.LastError != "":
		// Serving the last good policy: ready, but say what failed.
		add("policy", nil, "serving revision "+st.Revision+"; last reload failed: "+st.LastError)
	default:
		add("policy", nil, "revision "+st.Revision)
	}

	pctx, cancel := context.WithTimeout(ctx, readyProbeTimeout)
	defer cancel()
	add("store", probeStore(pctx, s.store), "")
	add("audit", s.auditor.Healthy(), "")
	add("identity", s.verifier.Ready(), "")
	add("ca", caValid(s.ca.Certificate(), time.Now()), "")
	return rd
}

// probeStore checks the store answers: a read of a name no grant can have
// must come back as not found.
func probeStore(ctx context.Context, st store.Store) error {
	if p, ok := st.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	_, _, err := st.Get(ctx, "onbehalf-probe", "readyz")
	if err == nil || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// caValid reports whether the interception CA can still sign leaves.
func caValid(c *x509.Certificate, now time.Time) error {
	if now.After(c.NotAfter) {
		return errors.New("interception CA expired at " + c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}
