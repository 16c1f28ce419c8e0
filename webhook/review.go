package webhook

import "encoding/json"

// The AdmissionReview version this webhook speaks. The chart registers it
// with admissionReviewVersions: [v1]; v1beta1 was removed in Kubernetes
// 1.22.
const (
	ReviewAPIVersion = "admission.k8s.io/v1"
	ReviewKind       = "AdmissionReview"
	// PatchTypeJSON is the only patch type admission webhooks may return.
	PatchTypeJSON = "JSONPatch"
)

// Review is the part of an admission.k8s.io/v1 AdmissionReview the webhook
// reads and writes. Fields it does not need (userInfo, oldObject, options,
// …) are ignored when decoding.
type Review struct {
	APIVersion string    `json:"apiVersion"`
	Kind       string    `json:"kind"`
	Request    *Request  `json:"request,omitempty"`
	Response   *Response `json:"response,omitempty"`
}

// GroupVersionKind names a kind as AdmissionRequest.kind does.
type GroupVersionKind struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// GroupVersionResource names a resource as AdmissionRequest.resource does.
type GroupVersionResource struct {
	Group    string `json:"group"`
	Version  string `json:"version"`
	Resource string `json:"resource"`
}

// Request is an AdmissionRequest, reduced to the fields the webhook uses.
type Request struct {
	// UID identifies the request; the response must echo it.
	UID         string               `json:"uid"`
	Kind        GroupVersionKind     `json:"kind"`
	Resource    GroupVersionResource `json:"resource"`
	SubResource string               `json:"subResource,omitempty"`
	// Name is empty on CREATE when the object uses generateName.
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Operation is CREATE, UPDATE, DELETE or CONNECT.
	Operation string          `json:"operation"`
	Object    json.RawMessage `json:"object,omitempty"`
	DryRun    *bool           `json:"dryRun,omitempty"`
}

// Response is an AdmissionResponse.
type Response struct {
	UID     string  `json:"uid"`
	Allowed bool    `json:"allowed"`
	Status  *Status `json:"status,omitempty"`
	// Patch is the JSON Patch (RFC 6902) document; encoding/json writes it
	// base64-encoded, as the API requires.
	Patch     []byte   `json:"patch,omitempty"`
	PatchType string   `json:"patchType,omitempty"`
	Warnings  []string `json:"warnings,omitempty"`
}

// Status is the metav1.Status carried by a refusal; kubectl shows Message.
type Status struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Code    int32  `json:"code,omitempty"`
}
