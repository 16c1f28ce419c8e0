package onbehalf.authz_test

import data.onbehalf.authz

test_passes if authz.decision.allow

# This test is wrong on purpose: a policy with a failing test is refused on
# reload.
test_denies_everything if not authz.decision.allow
