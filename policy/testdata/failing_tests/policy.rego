package onbehalf.authz

decision := {"allow": true}
