//go:build integration

package vault

import (
	"strings"
	"testing"

	"github.com/onbehalf-dev/onbehalf/injector/store"
	"github.com/onbehalf-dev/onbehalf/injector/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, tokenConfig(t, shared))
	})
}

func TestActivityConformance(t *testing.T) {
	storetest.RunActivity(t, func(t *testing.T) store.Store {
		return open(t, tokenConfig(t, shared))
	})
}

func TestRegistrationConformance(t *testing.T) {
	storetest.RunRegistrations(t, func(t *testing.T) store.Store {
		return open(t, tokenConfig(t, shared))
	})
}

func TestChangesConformance(t *testing.T) {
	storetest.RunChanges(t, func(t *testing.T) store.Store {
		return open(t, tokenConfig(t, shared))
	})
}

func TestRegistrationConformanceTransit(t *testing.T) {
	storetest.RunRegistrations(t, func(t *testing.T) store.Store {
		return open(t, withTransit(tokenConfig(t, shared)))
	})
}

func TestConformanceTransit(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, withTransit(tokenConfig(t, shared)))
	})
}

// TestConformanceLeastPrivilege runs the suite as an AppRole login holding
// only the documented policy (examples/vault/onbehalf-sidecar.hcl, moved to each store's
// fresh prefix), so the policy is known to cover every operation.
func TestConformanceLeastPrivilege(t *testing.T) {
	policy := sidecarPolicy(t)
	newStore := func(t *testing.T) store.Store {
		cfg := withTransit(tokenConfig(t, shared))
		name := "lp-" + cfg.Prefix
		if err := shared.WritePolicy(name, strings.ReplaceAll(policy, "/onbehalf/", "/"+cfg.Prefix+"/")); err != nil {
			t.Fatal(err)
		}
		roleID, secretID, err := shared.EnableAppRole(name, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Auth = AuthConfig{Method: AuthAppRole, RoleID: roleID, SecretIDFile: writeFile(t, "sid", secretID), AppRoleMount: "approle"}
		return open(t, cfg)
	}
	storetest.Run(t, newStore)
	t.Run("Activity", func(t *testing.T) { storetest.RunActivity(t, newStore) })
	t.Run("Registrations", func(t *testing.T) { storetest.RunRegistrations(t, newStore) })
	t.Run("Changes", func(t *testing.T) { storetest.RunChanges(t, newStore) })
}
