// Package webhook is the Kubernetes mutating admission webhook that puts the
// onbehalf sidecar beside an agent. For each Pod CREATE it receives an
// admission.k8s.io/v1 AdmissionReview and answers with an RFC 6902 JSON
// Patch that:
//
//   - adds the sidecar, as a native sidecar (an init container with
//     restartPolicy Always) or, on clusters without native sidecars, as the
//     first ordinary container;
//   - points every other container (an agent container) at the sidecar:
//     HTTP_PROXY, HTTPS_PROXY and NO_PROXY in both spellings, overwriting
//     any value the pod had (recorded in the onbehalf.dev/replaced-env
//     annotation), and the interception CA bundle mounted with the trust
//     variables common clients read (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, …);
//   - removes the pod's default service-account token from every container
//     and sets automountServiceAccountToken to false, so the agent holds no
//     Kubernetes credential;
//   - gives the sidecar alone a projected service-account token with the
//     Vault audience, the CA key and the audit key.
//
// The package does not import k8s.io: it decodes only the Pod fields it
// reads into small local structs and emits patch operations on paths, so
// fields it does not know survive untouched and the binary stays lean.
// Injection is convergent: admitting an already injected pod (reinvocation,
// or a second webhook adding a container) patches only what is missing, and
// a fully injected pod yields no patch at all.
//
// Pods whose isolation the sidecar cannot deliver are refused rather than
// admitted without it: hostNetwork, hostPID, shareProcessNamespace,
// privileged agent containers, agents running as the sidecar's user, and
// agents claiming the sidecar's ports, names or volumes. So are invalid
// onbehalf.dev/ annotations and unknown ones (a misspelt
// onbehalf.dev/audiance would otherwise leave the default in place).
//
// An Injector is immutable after NewInjector and safe for concurrent use; a
// Server handles admissions concurrently and reloads its TLS key pair when
// the files change.
package webhook
