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
// The tests need the onbehalf binary: $ONBEHALF_BIN, or one built from
// ../.. on first use. They reach nothing but the module proxy (for the
// build) and 127.0.0.1.
package chartcheck
