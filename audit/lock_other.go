//go:build !unix

package audit

import "os"

// lockFile does nothing where flock(2) is missing: there, one writer per
// file is up to the deployment.
func lockFile(*os.File) error { return nil }
