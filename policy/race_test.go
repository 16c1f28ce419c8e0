//go:build race

package policy

// raceEnabled is set under -race, whose sync.Pool drops items at random:
// pooled buffers then show up in allocation counts.
const raceEnabled = true
