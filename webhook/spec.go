package webhook

import (
	"path"
	"strconv"
)

// Names of the volumes the webhook adds. They are reserved: a pod that is
// not yet injected may not use them, and no agent container may mount the
// sidecar's.
const (
	volTrust         = "onbehalf-trust"
	volConfig        = "onbehalf-config"
	volPolicy        = "onbehalf-policy"
	volSecret        = "onbehalf-secret"
	volSidecarSecret = "onbehalf-sidecar-secret"
	volVaultToken    = "onbehalf-vault-token"
	volTmp           = "onbehalf-tmp"
)

// sidecarOnlyVolumes are mounted into the sidecar and must never be
// mounted into an agent container.
var sidecarOnlyVolumes = []string{volConfig, volPolicy, volSecret, volSidecarSecret, volVaultToken, volTmp}

// serviceAccountPath is where the ServiceAccount admission plugin mounts the
// pod's API token in every container.
const serviceAccountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// Probe timing for the sidecar. The startup probe gates the agent
// containers (a native sidecar must be started before they run), so it
// polls every second for up to a minute; readiness allows for the /readyz
// store probe's own 2 s bound.
const (
	startupPeriod    = 1
	startupFailures  = 60
	livenessPeriod   = 10
	livenessTimeout  = 2
	livenessFailures = 3
	readinessPeriod  = 5
	readinessTimeout = 3
	// tmpSizeLimit bounds the sidecar's scratch directory; it holds what
	// libraries write to $TMPDIR and the refresh journal (a few KiB per
	// grant waiting for Vault).
	tmpSizeLimit = "64Mi"
)

// The JSON shapes below are the Kubernetes objects the webhook adds, with
// only the fields it sets, in the API's field order.

type outContainer struct {
	Name                     string          `json:"name"`
	Image                    string          `json:"image"`
	ImagePullPolicy          string          `json:"imagePullPolicy,omitempty"`
	Args                     []string        `json:"args,omitempty"`
	Ports                    []outPort       `json:"ports,omitempty"`
	Env                      []outEnv        `json:"env,omitempty"`
	Resources                *Resources      `json:"resources,omitempty"`
	VolumeMounts             []outMount      `json:"volumeMounts,omitempty"`
	LivenessProbe            *outProbe       `json:"livenessProbe,omitempty"`
	ReadinessProbe           *outProbe       `json:"readinessProbe,omitempty"`
	StartupProbe             *outProbe       `json:"startupProbe,omitempty"`
	TerminationMessagePolicy string          `json:"terminationMessagePolicy,omitempty"`
	SecurityContext          *outSecurityCtx `json:"securityContext,omitempty"`
	RestartPolicy            string          `json:"restartPolicy,omitempty"`
}

type outPort struct {
	Name          string `json:"name"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

type outEnv struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type outMount struct {
	Name      string `json:"name"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
	MountPath string `json:"mountPath"`
}

type outProbe struct {
	HTTPGet          outHTTPGet `json:"httpGet"`
	TimeoutSeconds   int        `json:"timeoutSeconds,omitempty"`
	PeriodSeconds    int        `json:"periodSeconds,omitempty"`
	FailureThreshold int        `json:"failureThreshold,omitempty"`
}

type outHTTPGet struct {
	Path   string `json:"path"`
	Port   int    `json:"port"`
	Scheme string `json:"scheme"`
}

type outSecurityCtx struct {
	Capabilities             outCapabilities `json:"capabilities"`
	Privileged               bool            `json:"privileged"`
	RunAsUser                int64           `json:"runAsUser"`
	RunAsGroup               int64           `json:"runAsGroup"`
	RunAsNonRoot             bool            `json:"runAsNonRoot"`
	ReadOnlyRootFilesystem   bool            `json:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation bool            `json:"allowPrivilegeEscalation"`
	SeccompProfile           outSeccomp      `json:"seccompProfile"`
}

type outCapabilities struct {
	Drop []string `json:"drop"`
}

type outSeccomp struct {
	Type string `json:"type"`
}

type outVolume struct {
	Name      string        `json:"name"`
	EmptyDir  *outEmptyDir  `json:"emptyDir,omitempty"`
	ConfigMap *outConfigMap `json:"configMap,omitempty"`
	Projected *outProjected `json:"projected,omitempty"`
	Secret    *outSecret    `json:"secret,omitempty"`
}

type outSecret struct {
	SecretName string `json:"secretName"`
}

type outEmptyDir struct {
	SizeLimit string `json:"sizeLimit,omitempty"`
}

type outConfigMap struct {
	Name  string       `json:"name"`
	Items []outKeyPath `json:"items,omitempty"`
}

type outKeyPath struct {
	Key  string `json:"key"`
	Path string `json:"path"`
}

type outProjected struct {
	Sources []outProjection `json:"sources"`
}

type outProjection struct {
	Secret              *outSecretProjection `json:"secret,omitempty"`
	ServiceAccountToken *outTokenProjection  `json:"serviceAccountToken,omitempty"`
}

type outSecretProjection struct {
	Name  string       `json:"name"`
	Items []outKeyPath `json:"items"`
}

type outTokenProjection struct {
	Audience          string `json:"audience"`
	ExpirationSeconds int64  `json:"expirationSeconds"`
	Path              string `json:"path"`
}

// podOptions are the per-pod choices, from the config and the pod's
// annotations.
type podOptions struct {
	configMap string
	policyMap string
	audience  string
	resources Resources
	native    bool
}

// sidecarContainer builds the sidecar for one pod.
func (in *Injector) sidecarContainer(o podOptions) outContainer {
	s := in.cfg.Sidecar
	httpGet := func(p string) outHTTPGet { return outHTTPGet{Path: p, Port: s.AdminPort, Scheme: "HTTP"} }
	c := outContainer{
		Name:            s.Name,
		Image:           s.Image,
		ImagePullPolicy: s.ImagePullPolicy,
		Args: []string{
			"serve",
			"--config", path.Join(ConfigMountPath, s.ConfigKey),
			// The ports are the webhook's, not the config file's, so that
			// they always match the agents' proxy variables and the probes.
			"--listen", in.proxyAddr,
			"--admin-listen", ":" + strconv.Itoa(s.AdminPort),
		},
		Ports: []outPort{{Name: "onbehalf-admin", ContainerPort: s.AdminPort, Protocol: "TCP"}},
		VolumeMounts: []outMount{
			{Name: volConfig, ReadOnly: true, MountPath: ConfigMountPath},
			{Name: volSecret, ReadOnly: true, MountPath: SecretMountPath},
			{Name: volTmp, MountPath: TmpMountPath},
		},
		LivenessProbe: &outProbe{HTTPGet: httpGet("/healthz"), TimeoutSeconds: livenessTimeout,
			PeriodSeconds: livenessPeriod, FailureThreshold: livenessFailures},
		ReadinessProbe: &outProbe{HTTPGet: httpGet("/readyz"), TimeoutSeconds: readinessTimeout,
			PeriodSeconds: readinessPeriod, FailureThreshold: 2},
		StartupProbe: &outProbe{HTTPGet: httpGet("/healthz"), TimeoutSeconds: 1,
			PeriodSeconds: startupPeriod, FailureThreshold: startupFailures},
		TerminationMessagePolicy: "FallbackToLogsOnError",
		SecurityContext: &outSecurityCtx{
			Capabilities:             outCapabilities{Drop: []string{"ALL"}},
			RunAsUser:                s.RunAsUser,
			RunAsGroup:               s.RunAsGroup,
			RunAsNonRoot:             true,
			ReadOnlyRootFilesystem:   true,
			AllowPrivilegeEscalation: false,
			SeccompProfile:           outSeccomp{Type: "RuntimeDefault"},
		},
	}
	if o.audience != "" {
		// The sidecar reads ONBEHALF_* overrides over its config file.
		c.Env = []outEnv{{Name: "ONBEHALF_IDENTITY_AUDIENCE", Value: o.audience}}
	}
	if len(o.resources.Requests) > 0 || len(o.resources.Limits) > 0 {
		r := o.resources
		c.Resources = &r
	}
	if o.policyMap != "" {
		c.VolumeMounts = append(c.VolumeMounts, outMount{Name: volPolicy, ReadOnly: true, MountPath: PolicyMountPath})
	}
	if s.SidecarSecret != "" {
		c.VolumeMounts = append(c.VolumeMounts, outMount{Name: volSidecarSecret, ReadOnly: true, MountPath: SidecarSecretMountPath})
	}
	if s.VaultToken.Enabled {
		c.VolumeMounts = append(c.VolumeMounts, outMount{Name: volVaultToken, ReadOnly: true, MountPath: path.Dir(s.VaultToken.Path)})
	}
	if o.native {
		c.RestartPolicy = "Always"
	}
	return c
}

// podVolumes returns the volumes an injected pod needs, in order.
func (in *Injector) podVolumes(o podOptions) []outVolume {
	s := in.cfg.Sidecar
	vols := []outVolume{
		{Name: volTrust, ConfigMap: &outConfigMap{Name: in.cfg.Agent.TrustConfigMap,
			Items: []outKeyPath{{Key: TrustKey, Path: TrustKey}}}},
		{Name: volConfig, ConfigMap: &outConfigMap{Name: o.configMap}},
	}
	if o.policyMap != "" {
		vols = append(vols, outVolume{Name: volPolicy, ConfigMap: &outConfigMap{Name: o.policyMap}})
	}
	secret := &outProjected{Sources: []outProjection{{Secret: &outSecretProjection{
		Name:  s.CASecret,
		Items: []outKeyPath{{Key: SecretCertKey, Path: SecretCertKey}, {Key: SecretKeyKey, Path: SecretKeyKey}},
	}}}}
	if s.AuditSecret != "" {
		secret.Sources = append(secret.Sources, outProjection{Secret: &outSecretProjection{
			Name:  s.AuditSecret,
			Items: []outKeyPath{{Key: AuditKeyKey, Path: AuditKeyKey}},
		}})
	}
	vols = append(vols, outVolume{Name: volSecret, Projected: secret})
	if s.SidecarSecret != "" {
		vols = append(vols, outVolume{Name: volSidecarSecret, Secret: &outSecret{SecretName: s.SidecarSecret}})
	}
	if s.VaultToken.Enabled {
		vols = append(vols, outVolume{Name: volVaultToken, Projected: &outProjected{Sources: []outProjection{{
			ServiceAccountToken: &outTokenProjection{
				Audience:          s.VaultToken.Audience,
				ExpirationSeconds: s.VaultToken.ExpirationSeconds,
				Path:              path.Base(s.VaultToken.Path),
			},
		}}}})
	}
	vols = append(vols, outVolume{Name: volTmp, EmptyDir: &outEmptyDir{SizeLimit: tmpSizeLimit}})
	return vols
}

// agentEnv returns the variables every agent container gets, in order.
func (in *Injector) agentEnv() []outEnv {
	proxyURL := "http://" + in.proxyAddr
	env := []outEnv{
		{Name: "HTTP_PROXY", Value: proxyURL},
		{Name: "HTTPS_PROXY", Value: proxyURL},
		{Name: "NO_PROXY", Value: in.noProxy},
		// curl reads only the lower-case http_proxy; many tools prefer the
		// lower-case spellings when both are set.
		{Name: "http_proxy", Value: proxyURL},
		{Name: "https_proxy", Value: proxyURL},
		{Name: "no_proxy", Value: in.noProxy},
	}
	bundle := path.Join(in.cfg.Agent.TrustMountPath, TrustKey)
	for _, name := range in.cfg.Agent.CAEnv {
		env = append(env, outEnv{Name: name, Value: bundle})
	}
	return env
}

// proxyVar reports whether name is a proxy variable in either spelling.
func proxyVar(name string) bool {
	switch name {
	case "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
		"http_proxy", "https_proxy", "no_proxy", "all_proxy":
		return true
	}
	return false
}
