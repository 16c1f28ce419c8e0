package webhook

import "encoding/json"

// The structs below decode only the Pod fields the webhook reads. Slices
// stay nil when the field is absent or null and are non-nil when present,
// which decides between adding a whole array and appending to one.

type pod struct {
	// Metadata is a pointer so that a missing metadata object (which no
	// API server sends) is refused rather than patched into.
	Metadata *objectMeta `json:"metadata"`
	Spec     podSpec     `json:"spec"`
}

type objectMeta struct {
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Namespace    string            `json:"namespace"`
	Annotations  map[string]string `json:"annotations"`
}

type podSpec struct {
	Containers                   []container         `json:"containers"`
	InitContainers               []container         `json:"initContainers"`
	Volumes                      []volume            `json:"volumes"`
	AutomountServiceAccountToken *bool               `json:"automountServiceAccountToken"`
	HostNetwork                  bool                `json:"hostNetwork"`
	HostPID                      bool                `json:"hostPID"`
	ShareProcessNamespace        *bool               `json:"shareProcessNamespace"`
	SecurityContext              *podSecurityContext `json:"securityContext"`
}

type podSecurityContext struct {
	RunAsUser *int64 `json:"runAsUser"`
}

type container struct {
	Name            string           `json:"name"`
	Env             []envVar         `json:"env"`
	VolumeMounts    []volumeMount    `json:"volumeMounts"`
	Ports           []containerPort  `json:"ports"`
	SecurityContext *securityContext `json:"securityContext"`
}

type envVar struct {
	Name      string          `json:"name"`
	Value     string          `json:"value"`
	ValueFrom json.RawMessage `json:"valueFrom"`
}

type volumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
}

type containerPort struct {
	ContainerPort int `json:"containerPort"`
}

type securityContext struct {
	Privileged *bool  `json:"privileged"`
	RunAsUser  *int64 `json:"runAsUser"`
}

type volume struct {
	Name      string           `json:"name"`
	Projected *projectedVolume `json:"projected"`
}

type projectedVolume struct {
	Sources []struct {
		ServiceAccountToken *struct {
			Audience string `json:"audience"`
		} `json:"serviceAccountToken"`
	} `json:"sources"`
}

// apiToken reports whether v projects a service-account token for
// the API server (no audience): the token the ServiceAccount admission
// plugin mounts as kube-api-access-*.
func (v volume) apiToken() bool {
	if v.Projected == nil {
		return false
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil && s.ServiceAccountToken.Audience == "" {
			return true
		}
	}
	return false
}

// tokenAudience returns the audience of the first service-account token v
// projects, and whether it projects one.
func (v volume) tokenAudience() (string, bool) {
	if v.Projected == nil {
		return "", false
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil {
			return s.ServiceAccountToken.Audience, true
		}
	}
	return "", false
}

// displayName names the pod in messages and logs: its name, or its
// generateName prefix followed by "*" before the API server picks a name.
func (p *pod) displayName(reqName string) string {
	switch {
	case p.Metadata.Name != "":
		return p.Metadata.Name
	case reqName != "":
		return reqName
	case p.Metadata.GenerateName != "":
		return p.Metadata.GenerateName + "*"
	}
	return "(unnamed)"
}
