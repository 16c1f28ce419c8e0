//go:build !unix

package journal

import "os"

// lockFile does nothing where flock(2) is missing: there, one process per
// journal directory is up to the deployment.
func lockFile(*os.File) error { return nil }
