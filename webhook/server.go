package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Server limits and timeouts.
const (
	// maxReviewBytes bounds an AdmissionReview body. The API server refuses
	// objects over 3 MiB and a Pod CREATE review carries the object once,
	// plus a few hundred bytes of request metadata.
	maxReviewBytes = 4 << 20
	// readHeaderTimeout, readTimeout and writeTimeout bound one admission.
	// The API server sends a review in one write and waits at most the
	// webhook's timeoutSeconds (at most 30 s; the chart sets 10 s) for the
	// answer, so anything slower is not the API server.
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	// idleTimeout keeps the API server's pooled connections (it reuses
	// them across admissions) without holding dead ones for long.
	idleTimeout = 90 * time.Second
	// shutdownTimeout lets in-flight admissions finish on SIGTERM; the
	// API server retries nothing, so a dropped one fails a pod creation.
	shutdownTimeout = 10 * time.Second
	// maxHeaderBytes bounds request headers; the API server sends a few.
	maxHeaderBytes = 16 << 10
)

// Server serves the webhook: /mutate and /healthz over TLS, and /healthz and
// /metrics on the optional plain admin listener.
type Server struct {
	cfg   Config
	inj   *Injector
	log   *zap.Logger
	certs *certReloader
	reg   *prometheus.Registry

	admissions *prometheus.CounterVec
	duration   prometheus.Histogram
}

// NewServer validates cfg, loads the TLS key pair and registers metrics in
// a fresh registry. log must not be nil.
func NewServer(cfg Config, log *zap.Logger) (*Server, error) {
	inj, err := NewInjector(cfg)
	if err != nil {
		return nil, err
	}
	certs, err := newCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ReloadInterval, log)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, inj: inj, log: log, certs: certs, reg: prometheus.NewRegistry()}
	s.admissions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "onbehalf", Subsystem: "webhook", Name: "admissions_total",
		Help: "Pod admissions by outcome (injected, unchanged, skipped, denied, invalid, ignored).",
	}, []string{"outcome"})
	s.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "onbehalf", Subsystem: "webhook", Name: "admission_duration_seconds",
		Help:    "Time to decode a review, decide and encode the answer.",
		Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1},
	})
	s.reg.MustRegister(s.admissions, s.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s, nil
}

// Registry returns the server's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// TLSConfig returns the serving TLS configuration: TLS 1.2 or later, with
// the key pair reloaded from its files as they change.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.certs.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}

// Handler serves the TLS listener: POST /mutate and GET /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", s.mutate)
	mux.HandleFunc("GET /healthz", healthz)
	return mux
}

// AdminHandler serves the plain admin listener: GET /healthz and /metrics.
// Nothing there changes state or reveals a pod.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return mux
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// Run listens on the configured addresses and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("webhook listen: %w", err)
	}
	var admin net.Listener
	if s.cfg.AdminListen != "" {
		if admin, err = net.Listen("tcp", s.cfg.AdminListen); err != nil {
			ln.Close()
			return fmt.Errorf("webhook admin listen: %w", err)
		}
	}
	return s.Serve(ctx, ln, admin)
}

// Serve serves TLS on ln and plain HTTP on admin (which may be nil) until
// ctx ends, then shuts both down gracefully. It takes ownership of the
// listeners.
func (s *Server) Serve(ctx context.Context, ln, admin net.Listener) error {
	tlsSrv := s.httpServer(s.Handler())
	tlsSrv.TLSConfig = s.TLSConfig()
	servers := []*http.Server{tlsSrv}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ignoreClosed(tlsSrv.ServeTLS(ln, "", "")) })
	s.log.Info("webhook listening", zap.String("addr", ln.Addr().String()))
	if admin != nil {
		as := s.httpServer(s.AdminHandler())
		servers = append(servers, as)
		g.Go(func() error { return ignoreClosed(as.Serve(admin)) })
		s.log.Info("webhook admin listening", zap.String("addr", admin.Addr().String()))
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		var errs []error
		for _, srv := range servers {
			errs = append(errs, srv.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	return g.Wait()
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(s.log.Named("http")),
	}
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// mutate answers one AdmissionReview.
func (s *Server) mutate(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		s.fail(w, http.StatusUnsupportedMediaType, "content type must be application/json")
		return
	}
	var review Review
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err := dec.Decode(&review); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			s.fail(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("review larger than %d bytes", maxReviewBytes))
			return
		}
		s.fail(w, http.StatusBadRequest, "body is not an AdmissionReview")
		return
	}
	if review.APIVersion != ReviewAPIVersion || review.Kind != ReviewKind || review.Request == nil {
		s.fail(w, http.StatusBadRequest, "want an "+ReviewAPIVersion+" AdmissionReview with a request")
		return
	}
	req := review.Request
	res := s.inj.Admit(req)
	resp := &Response{UID: req.UID, Allowed: true, Warnings: res.Warnings}
	switch res.Outcome {
	case OutcomeInjected:
		patch, err := MarshalPatch(res.Patch)
		if err != nil {
			// Unreachable: the operations hold only strings, numbers and
			// the package's own structs.
			s.fail(w, http.StatusInternalServerError, "cannot encode the patch")
			return
		}
		resp.Patch, resp.PatchType = patch, PatchTypeJSON
	case OutcomeDenied:
		resp.Allowed = false
		resp.Status = &Status{Status: "Failure", Reason: "Forbidden", Code: http.StatusForbidden,
			Message: "onbehalf: cannot inject the sidecar into pod " + res.Pod + ": " + res.Err.Error()}
	case OutcomeInvalid:
		resp.Allowed = false
		resp.Status = &Status{Status: "Failure", Reason: "BadRequest", Code: http.StatusBadRequest,
			Message: "onbehalf: " + res.Err.Error()}
	}
	out, err := json.Marshal(Review{APIVersion: ReviewAPIVersion, Kind: ReviewKind, Response: resp})
	if err != nil {
		s.fail(w, http.StatusInternalServerError, "cannot encode the response")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)

	elapsed := time.Since(start)
	s.admissions.WithLabelValues(string(res.Outcome)).Inc()
	s.duration.Observe(elapsed.Seconds())
	fields := []zap.Field{
		zap.String("uid", req.UID), zap.String("namespace", req.Namespace), zap.String("pod", res.Pod),
		zap.String("outcome", string(res.Outcome)), zap.Int("ops", len(res.Patch)),
		zap.Bool("dry_run", req.DryRun != nil && *req.DryRun), zap.Duration("duration", elapsed),
	}
	if res.Err != nil {
		s.log.Warn("admission", append(fields, zap.Error(res.Err))...)
		return
	}
	s.log.Info("admission", fields...)
}

// fail answers a request that is not a usable AdmissionReview. The API
// server treats it as a webhook failure and applies the failure policy.
func (s *Server) fail(w http.ResponseWriter, code int, msg string) {
	s.admissions.WithLabelValues(string(OutcomeInvalid)).Inc()
	s.log.Warn("bad admission request", zap.Int("status", code), zap.String("reason", msg))
	http.Error(w, msg, code)
}
