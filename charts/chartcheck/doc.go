// Package chartcheck tests the Helm chart in ../onbehalf. It is a module of
// its own so that Helm, the Kubernetes API types and the CRD types stay out
// of the main module's dependencies; everything is in its tests:
//
//   - helm lint and template (Helm's Go SDK) over several value sets, each
//     rendered manifest decoded strictly into its Kubernetes API type (an
//     unknown field or kind fails);
//   - the rendered sidecar configuration checked by `onbehalf serve
//     --check`, with the ConfigMaps and Secrets laid out as the kubelet
//     mounts them;
//   - the rendered webhook run as `onbehalf webhook` with the chart's own
//     TLS, admitting real Pods built from the example Deployment; its JSON
//     patches applied with evanphx/json-patch and the result decoded
//     strictly into corev1.Pod.
//
// With the integration tag (make chartcheck), against a real API server:
//
//   - etcd (Debian's etcd-server) and the pinned kube-apiserver
//     (tools/kube-apiserver) on 127.0.0.1, with client certificates and
//     RBAC; the chart installed, upgraded and uninstalled with Helm's Go
//     SDK; every object it renders accepted by the server (NetworkPolicy,
//     PodDisruptionBudget, Ingress, a ServiceMonitor under a minimal CRD);
//   - the release's webhook run as `onbehalf webhook`, registered by URL
//     (webhook.url): pods created through the API come back injected, or
//     refused with the API server's 403; with the webhook down, the
//     failure policy as documented;
//   - the chart's service accounts checked with SubjectAccessReview, and
//     the install notes' kubectl commands run with the pinned kubectl
//     (tools/kubectl).
//
// There is no kubelet: pods are admitted and stored, never run.
//
// The tests need the onbehalf binary: $ONBEHALF_BIN, or one built from
// ../.. on first use. They reach nothing but the module proxy (for the
// build) and 127.0.0.1: with the integration tag the test binary
// re-executes itself in a network namespace whose only interface is lo
// (netns_test.go), so that not even the API server's dials to cluster IPs
// can leave the machine.
package chartcheck
