# A policy that would iterate 10^10 times: only the evaluation deadline stops
# it.
package onbehalf.authz

decision := {"allow": true} if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i * j == -1
}
