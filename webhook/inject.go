package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Annotations the webhook reads and writes on pods.
const (
	// AnnotationInject asks for injection ("true") or opts out ("false").
	AnnotationInject = "onbehalf.dev/inject"
	// AnnotationAudience sets the sidecar's identity audience (the aud an
	// assertion must carry) for this pod, e.g. the agent's name, so that
	// an assertion minted for one agent is refused by every other.
	AnnotationAudience = "onbehalf.dev/audience"
	// AnnotationConfig names the sidecar config ConfigMap for this pod.
	AnnotationConfig = "onbehalf.dev/config"
	// AnnotationPolicy names the policy ConfigMap for this pod.
	AnnotationPolicy = "onbehalf.dev/policy"
	// AnnotationResources replaces the sidecar's resources, as JSON:
	// {"requests":{"cpu":"100m"},"limits":{"memory":"128Mi"}}.
	AnnotationResources = "onbehalf.dev/resources"
	// AnnotationInjected marks an injected pod: "native-sidecar" or
	// "container", the way the sidecar was added.
	AnnotationInjected = "onbehalf.dev/injected"
	// AnnotationReplacedEnv lists, as container/VARIABLE separated by
	// commas, the variables the pod set itself that the webhook replaced.
	AnnotationReplacedEnv = "onbehalf.dev/replaced-env"
)

// Values of AnnotationInjected.
const (
	InjectedNative    = "native-sidecar"
	InjectedContainer = "container"
)

// maxAnnotationBytes bounds the annotations the webhook parses; real values
// are a few dozen bytes.
const maxAnnotationBytes = 4096

// Outcome says what the webhook did with one admission request. It is a
// bounded metric label.
type Outcome string

// Outcomes.
const (
	// OutcomeIgnored: not a Pod CREATE (the webhook is registered for
	// nothing else, so this means a misconfigured registration).
	OutcomeIgnored Outcome = "ignored"
	// OutcomeSkipped: a pod that did not ask for injection or opted out.
	OutcomeSkipped Outcome = "skipped"
	// OutcomeInjected: a patch was returned.
	OutcomeInjected Outcome = "injected"
	// OutcomeUnchanged: an injected pod that needed nothing more.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeDenied: a pod asking for injection that the sidecar cannot
	// protect, or with invalid annotations.
	OutcomeDenied Outcome = "denied"
	// OutcomeInvalid: a request that is not a decodable pod.
	OutcomeInvalid Outcome = "invalid"
)

// Sentinel errors, matched with errors.Is.
var (
	// ErrRefused wraps the reasons a pod that asked for injection is
	// refused.
	ErrRefused = errors.New("pod refused")
	// ErrBadObject marks an object that does not decode as a Pod.
	ErrBadObject = errors.New("object is not a valid pod")
)

// Injector computes the patch that injects the sidecar into a pod.
type Injector struct {
	cfg       Config
	proxyAddr string // 127.0.0.1:<proxy port>
	noProxy   string
}

// NewInjector validates cfg and returns an Injector for it.
func NewInjector(cfg Config) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("webhook config: %w", err)
	}
	// NO_PROXY lists loopback only, plus the operator's additions: a
	// routed host in it would be reached around the sidecar.
	noProxy := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Agent.NoProxy...)
	return &Injector{
		cfg:       cfg,
		proxyAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Sidecar.ProxyPort)),
		noProxy:   strings.Join(noProxy, ","),
	}, nil
}

// Result is the decision for one admission request.
type Result struct {
	Outcome Outcome
	// Pod names the pod for logs ("name", "prefix-*" or "(unnamed)").
	Pod string
	// Patch holds the JSON Patch operations (OutcomeInjected only).
	Patch []PatchOp
	// Warnings are shown to the client that created the pod.
	Warnings []string
	// Err explains OutcomeDenied (wrapping ErrRefused) and OutcomeInvalid
	// (wrapping ErrBadObject). Its text names no secret: pods carry none
	// the webhook reads.
	Err error
}

// Admit decides one admission request. It never fails: every problem is a
// Result with an outcome.
func (in *Injector) Admit(req *Request) Result {
	if req.Kind != (GroupVersionKind{Version: "v1", Kind: "Pod"}) || req.SubResource != "" || req.Operation != "CREATE" {
		return Result{Outcome: OutcomeIgnored, Pod: req.Name}
	}
	var p pod
	if err := decodePod(req.Object, &p); err != nil {
		return Result{Outcome: OutcomeInvalid, Pod: req.Name, Err: err}
	}
	name := p.displayName(req.Name)
	want, err := in.wanted(p.Metadata.Annotations)
	if err != nil {
		return Result{Outcome: OutcomeDenied, Pod: name, Err: fmt.Errorf("%w: %w", ErrRefused, err)}
	}
	if !want {
		return Result{Outcome: OutcomeSkipped, Pod: name}
	}
	plan, err := in.plan(&p)
	if err != nil {
		return Result{Outcome: OutcomeDenied, Pod: name, Err: fmt.Errorf("%w: %w", ErrRefused, err)}
	}
	if len(plan.ops) == 0 {
		return Result{Outcome: OutcomeUnchanged, Pod: name, Warnings: plan.warnings}
	}
	return Result{Outcome: OutcomeInjected, Pod: name, Patch: plan.ops, Warnings: plan.warnings}
}

// decodePod decodes obj and checks the shape every API server sends:
// metadata present, at least one container, every container named.
func decodePod(obj []byte, p *pod) error {
	if err := json.Unmarshal(obj, p); err != nil {
		return fmt.Errorf("%w: cannot decode", ErrBadObject)
	}
	if p.Metadata == nil {
		return fmt.Errorf("%w: no metadata", ErrBadObject)
	}
	if len(p.Spec.Containers) == 0 {
		return fmt.Errorf("%w: no containers", ErrBadObject)
	}
	for _, list := range [][]container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range list {
			if c.Name == "" {
				return fmt.Errorf("%w: a container has no name", ErrBadObject)
			}
		}
	}
	return nil
}

// wanted reports whether the pod asks for injection.
func (in *Injector) wanted(ann map[string]string) (bool, error) {
	v, ok := ann[AnnotationInject]
	if !ok {
		return in.cfg.InjectByDefault, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "enabled", "yes":
		return true, nil
	case "false", "disabled", "no":
		return false, nil
	}
	// A typo must not silently run an agent without its sidecar, nor
	// silently inject one.
	return false, fmt.Errorf("annotation %s must be \"true\" or \"false\", got %q", AnnotationInject, truncate(v))
}

// plan is the patch for one pod and what to tell the user about it.
type plan struct {
	ops      []PatchOp
	warnings []string
}

// containerRef locates a container in the pod.
type containerRef struct {
	list  string // "containers" or "initContainers"
	index int
	c     *container
}

func (r containerRef) path() string { return "/spec/" + r.list + "/" + strconv.Itoa(r.index) }

// plan checks the pod and computes its patch. Operations are ordered so
// that every index they use is valid when they are applied in sequence:
// edits inside containers first, then removals (highest index first), then
// appends, and the sidecar's insertion at index 0 last.
func (in *Injector) plan(p *pod) (plan, error) {
	var pl plan
	injected := p.Metadata.Annotations[AnnotationInjected] != ""
	opts, problems := in.options(p.Metadata.Annotations)

	sidecar, agents := in.split(p)
	native := in.cfg.NativeSidecar
	if sidecar != nil {
		native = sidecar.list == "initContainers"
	}
	opts.native = native
	problems = append(problems, in.checkPod(p, sidecar, agents, injected)...)
	if len(problems) > 0 {
		return pl, errors.New(strings.Join(problems, "; "))
	}

	// Which volumes carry the pod's API token.
	tokenVols := map[string]bool{}
	for _, v := range p.Spec.Volumes {
		if v.apiToken() {
			tokenVols[v.Name] = true
		}
	}
	for _, r := range agents {
		for _, m := range r.c.VolumeMounts {
			if underServiceAccountPath(m.MountPath) {
				tokenVols[m.Name] = true
			}
		}
	}

	env := in.agentEnv()
	var replaced []string
	for _, r := range agents {
		// Init containers run before a non-native sidecar exists: they
		// lose the API token but get no proxy.
		proxied := r.list == "containers" || native
		var removals []int
		for j, m := range r.c.VolumeMounts {
			if tokenVols[m.Name] || underServiceAccountPath(m.MountPath) {
				removals = append(removals, j)
			}
		}
		for _, j := range slices.Backward(removals) {
			pl.ops = append(pl.ops, PatchOp{Op: "remove", Path: r.path() + "/volumeMounts/" + strconv.Itoa(j)})
		}
		for _, m := range r.c.VolumeMounts {
			if aud, ok := in.tokenVolumeAudience(p, m.Name); ok && !tokenVols[m.Name] {
				pl.warnings = append(pl.warnings, fmt.Sprintf(
					"container %s mounts volume %s, a service-account token for audience %q: the agent can read it",
					r.c.Name, m.Name, aud))
			}
		}
		if !proxied {
			continue
		}
		ops, rep := envOps(r, env)
		pl.ops = append(pl.ops, ops...)
		replaced = append(replaced, rep...)
		if !slices.ContainsFunc(r.c.VolumeMounts, func(m volumeMount) bool { return m.Name == volTrust }) {
			mount := outMount{Name: volTrust, ReadOnly: true, MountPath: in.cfg.Agent.TrustMountPath}
			if r.c.VolumeMounts == nil {
				pl.ops = append(pl.ops, PatchOp{Op: "add", Path: r.path() + "/volumeMounts", Value: []outMount{mount}})
			} else {
				pl.ops = append(pl.ops, PatchOp{Op: "add", Path: r.path() + "/volumeMounts/-", Value: mount})
			}
		}
	}

	// Pod-level: the token volume goes, automounting stops.
	for i, v := range slices.Backward(p.Spec.Volumes) {
		if tokenVols[v.Name] {
			pl.ops = append(pl.ops, PatchOp{Op: "remove", Path: "/spec/volumes/" + strconv.Itoa(i)})
		}
	}
	if a := p.Spec.AutomountServiceAccountToken; a == nil || *a {
		pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/spec/automountServiceAccountToken", Value: false})
	}
	var missing []outVolume
	for _, v := range in.podVolumes(opts) {
		if !slices.ContainsFunc(p.Spec.Volumes, func(have volume) bool { return have.Name == v.Name }) {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 {
		if p.Spec.Volumes == nil {
			pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/spec/volumes", Value: missing})
		} else {
			for _, v := range missing {
				pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/spec/volumes/-", Value: v})
			}
		}
	}

	// Annotations before the sidecar, which shifts container indexes.
	ann := map[string]string{}
	if !injected {
		mode := InjectedContainer
		if native {
			mode = InjectedNative
		}
		ann[AnnotationInjected] = mode
	}
	if len(replaced) > 0 {
		if prev := p.Metadata.Annotations[AnnotationReplacedEnv]; prev != "" {
			replaced = append(strings.Split(prev, ","), replaced...)
		}
		slices.Sort(replaced)
		ann[AnnotationReplacedEnv] = strings.Join(slices.Compact(replaced), ",")
		pl.warnings = append(pl.warnings, fmt.Sprintf(
			"onbehalf replaced variables the pod set (%s): agent traffic must go through the sidecar", ann[AnnotationReplacedEnv]))
	}
	if len(ann) > 0 {
		if p.Metadata.Annotations == nil {
			pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/metadata/annotations", Value: ann})
		} else {
			for _, k := range sortedKeys(ann) {
				pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/metadata/annotations/" + escapePointer(k), Value: ann[k]})
			}
		}
	}

	if sidecar == nil {
		c := in.sidecarContainer(opts)
		switch {
		case !native:
			pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/spec/containers/0", Value: c})
		case p.Spec.InitContainers == nil:
			pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/spec/initContainers", Value: []outContainer{c}})
		default:
			// First, so that it runs before the pod's own init containers.
			pl.ops = append(pl.ops, PatchOp{Op: "add", Path: "/spec/initContainers/0", Value: c})
		}
	}
	return pl, nil
}

// envOps sets env on one container: missing variables are appended, and
// variables the container already sets to something else (a value or a
// valueFrom) are replaced, because an agent that keeps its own proxy
// variables would bypass the sidecar. It returns the operations and the
// replaced names as container/NAME.
func envOps(r containerRef, env []outEnv) ([]PatchOp, []string) {
	if r.c.Env == nil {
		return []PatchOp{{Op: "add", Path: r.path() + "/env", Value: env}}, nil
	}
	var ops []PatchOp
	var replaced []string
	want := map[string]string{}
	for _, e := range env {
		want[e.Name] = e.Value
	}
	proxyURL := want["HTTPS_PROXY"]
	seen := map[string]bool{}
	for j, e := range r.c.Env {
		value, managed := want[e.Name]
		if !managed && (e.Name == "ALL_PROXY" || e.Name == "all_proxy") {
			// A client would use it for schemes the other variables do
			// not cover: it must point at the sidecar too.
			value, managed = proxyURL, true
		}
		if !managed {
			continue
		}
		seen[e.Name] = true
		if e.Value == value && len(e.ValueFrom) == 0 {
			continue
		}
		ops = append(ops, PatchOp{Op: "replace", Path: r.path() + "/env/" + strconv.Itoa(j), Value: outEnv{Name: e.Name, Value: value}})
		replaced = append(replaced, r.c.Name+"/"+e.Name)
	}
	for _, e := range env {
		if !seen[e.Name] {
			ops = append(ops, PatchOp{Op: "add", Path: r.path() + "/env/-", Value: e})
		}
	}
	return ops, replaced
}

// split finds the sidecar (nil when absent) and the agent containers: every
// other container and init container.
func (in *Injector) split(p *pod) (*containerRef, []containerRef) {
	var sidecar *containerRef
	var agents []containerRef
	for _, list := range []struct {
		name string
		cs   []container
	}{{"initContainers", p.Spec.InitContainers}, {"containers", p.Spec.Containers}} {
		for i := range list.cs {
			r := containerRef{list: list.name, index: i, c: &list.cs[i]}
			if r.c.Name == in.cfg.Sidecar.Name && sidecar == nil {
				sidecar = &r
				continue
			}
			agents = append(agents, r)
		}
	}
	return sidecar, agents
}

// options reads the per-pod annotations over the config's defaults.
func (in *Injector) options(ann map[string]string) (podOptions, []string) {
	s := in.cfg.Sidecar
	o := podOptions{configMap: s.ConfigMap, policyMap: s.PolicyConfigMap, resources: s.Resources}
	var problems []string
	bad := func(key, format string, args ...any) {
		problems = append(problems, "annotation "+key+": "+fmt.Sprintf(format, args...))
	}
	if v, ok := ann[AnnotationConfig]; ok {
		if !isDNSSubdomain(v) {
			bad(AnnotationConfig, "must be a ConfigMap name, got %q", truncate(v))
		}
		o.configMap = v
	}
	if v, ok := ann[AnnotationPolicy]; ok {
		if !isDNSSubdomain(v) {
			bad(AnnotationPolicy, "must be a ConfigMap name, got %q", truncate(v))
		}
		o.policyMap = v
	}
	if v, ok := ann[AnnotationAudience]; ok {
		if v == "" || len(v) > 256 || strings.ContainsFunc(v, isSpaceOrControl) {
			bad(AnnotationAudience, "must be 1 to 256 characters without white space, got %q", truncate(v))
		}
		o.audience = v
	}
	if v, ok := ann[AnnotationResources]; ok {
		r, err := parseResources(v)
		if err != nil {
			bad(AnnotationResources, "%v", err)
		}
		o.resources = r
	}
	// A misspelt annotation (onbehalf.dev/audiance) would silently give
	// the pod the defaults it meant to change: refuse it.
	var unknown []string
	for k := range ann {
		if strings.HasPrefix(k, annotationPrefix) && !slices.Contains(knownAnnotations, k) {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	for _, k := range unknown {
		bad(truncate(k), "unknown%s; known: %s", config.Suggest(k, knownAnnotations), strings.Join(knownAnnotations, ", "))
	}
	return o, problems
}

// annotationPrefix starts every annotation the webhook reads or writes.
const annotationPrefix = "onbehalf.dev/"

// knownAnnotations are the annotations a pod may carry under
// annotationPrefix.
var knownAnnotations = []string{
	AnnotationInject, AnnotationAudience, AnnotationConfig, AnnotationPolicy, AnnotationResources,
	AnnotationInjected, AnnotationReplacedEnv,
}

// parseResources decodes the resources annotation strictly.
func parseResources(v string) (Resources, error) {
	var r Resources
	if len(v) > maxAnnotationBytes {
		return r, fmt.Errorf("longer than %d bytes", maxAnnotationBytes)
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, errors.New(`must be JSON such as {"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"memory":"128Mi"}}`)
	}
	if dec.More() {
		return r, errors.New("must hold one JSON object")
	}
	if err := r.validate(); err != nil {
		return r, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return r, nil
}

// checkPod returns why the sidecar cannot protect this pod, if it cannot.
func (in *Injector) checkPod(p *pod, sidecar *containerRef, agents []containerRef, injected bool) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	s := in.cfg.Sidecar
	if p.Spec.HostNetwork {
		add("hostNetwork is set: the sidecar's loopback proxy would be the node's")
	}
	if p.Spec.HostPID {
		add("hostPID is set: agents could read the sidecar's memory and files")
	}
	if p.Spec.ShareProcessNamespace != nil && *p.Spec.ShareProcessNamespace {
		add("shareProcessNamespace is set: agents could reach the sidecar's files through /proc")
	}
	if sidecar != nil && !injected {
		add("container name %q is reserved for the onbehalf sidecar", s.Name)
	}
	if !injected {
		for _, v := range p.Spec.Volumes {
			if strings.HasPrefix(v.Name, "onbehalf-") {
				add("volume name %q is reserved for onbehalf", v.Name)
			}
		}
	}
	var podUID *int64
	if p.Spec.SecurityContext != nil {
		podUID = p.Spec.SecurityContext.RunAsUser
	}
	for _, r := range agents {
		c := r.c
		if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
			add("container %s is privileged: it could read the sidecar's credentials", c.Name)
		}
		uid := podUID
		if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
			uid = c.SecurityContext.RunAsUser
		}
		if uid != nil && *uid == s.RunAsUser {
			add("container %s runs as user %d, the sidecar's", c.Name, s.RunAsUser)
		}
		for _, port := range c.Ports {
			if port.ContainerPort == s.ProxyPort || port.ContainerPort == s.AdminPort {
				add("container %s uses port %d, which the sidecar listens on", c.Name, port.ContainerPort)
			}
		}
		for _, m := range c.VolumeMounts {
			if slices.Contains(sidecarOnlyVolumes, m.Name) {
				add("container %s mounts %s, which only the sidecar may mount", c.Name, m.Name)
			}
			if m.Name != volTrust && m.MountPath == in.cfg.Agent.TrustMountPath {
				add("container %s already mounts something at %s, where the CA bundle goes", c.Name, m.MountPath)
			}
		}
	}
	return problems
}

// tokenVolumeAudience reports the audience of the service-account token
// volume called name, if that volume is one.
func (in *Injector) tokenVolumeAudience(p *pod, name string) (string, bool) {
	for _, v := range p.Spec.Volumes {
		if v.Name == name {
			return v.tokenAudience()
		}
	}
	return "", false
}

func underServiceAccountPath(mountPath string) bool {
	mountPath = strings.TrimRight(mountPath, "/")
	return mountPath == serviceAccountPath || strings.HasPrefix(mountPath, serviceAccountPath+"/")
}

// truncate shortens a user-supplied value quoted in a message.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
