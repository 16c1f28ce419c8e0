package audit

import (
	"github.com/onbehalf-dev/onbehalf/internal/config"
)

// Sink names where audit records go.
type Sink string

// Sinks.
const (
	// SinkStdout writes records to the process's standard output, for a
	// container log collector. Each process start begins a new chain.
	SinkStdout Sink = "stdout"
	// SinkFile writes records to a rotated file (see [FileConfig]).
	SinkFile Sink = "file"
	// SinkBoth writes every record to both; a record counts as accepted when
	// at least one of them took it. A record only stdout took is missing
	// from the file, and Verify on the file reports the gap as deleted
	// records, which is what happened to that copy.
	SinkBoth Sink = "both"
)

// Durability says how hard the file sink works to have a record on disk
// before Write returns.
type Durability string

// Durability levels, from fastest to safest.
const (
	// DurabilityBuffered collects records in memory and writes them at most
	// [BufferedFlushInterval] later (sooner when the buffer fills) and on
	// Close. A crash may lose the last second of records, and a failing disk
	// is noticed at the next flush rather than at the record's Write, so
	// with fail_closed an inject record is then only in memory when the
	// token leaves; choose write or sync for a strict guarantee.
	DurabilityBuffered Durability = "buffered"
	// DurabilityWrite issues one write(2) per record and does not fsync: a
	// record survives a crash of the process but not necessarily of the
	// machine. This is the default.
	DurabilityWrite Durability = "write"
	// DurabilitySync writes and fsyncs each record before Write returns.
	DurabilitySync Durability = "sync"
)

// Defaults and bounds of the file sink.
const (
	// DefaultMaxSizeMB is the size at which the audit file is rotated: large
	// enough that rotation is rare, small enough to copy and verify quickly.
	DefaultMaxSizeMB = 100
	// DefaultMaxFiles is how many rotated files are kept besides the active
	// one (1 GB of history at the default size).
	DefaultMaxFiles = 10
	// maxMaxSizeMB bounds max_size_mb to something a file system and Verify
	// handle comfortably (1 TiB).
	maxMaxSizeMB = 1 << 20
	// maxMaxFiles bounds max_files: rotation renames every kept file, so a
	// huge count would make each rotation slow.
	maxMaxFiles = 1000
)

// Config configures the audit trail. The zero value is not useful; start
// from [DefaultConfig].
type Config struct {
	// Sink is stdout, file or both. Default stdout.
	Sink Sink `yaml:"sink"`
	// File configures the file sink; required when Sink is file or both.
	File FileConfig `yaml:"file"`
	// FailClosed tells the proxy to refuse injecting requests (503
	// audit_unavailable) when no sink accepts their record. Default true.
	// The Auditor itself reports failures the same way either way.
	FailClosed bool `yaml:"fail_closed"`
	// FingerprintKeyFile holds the HMAC key for token_fingerprint (at least
	// 32 bytes after trimming surrounding white space). A missing file is
	// created with a fresh random key and mode 0600. Empty means a random
	// key per process: fingerprints then correlate only within one run.
	FingerprintKeyFile string `yaml:"fingerprint_key_file"`
}

// FileConfig configures the file sink.
type FileConfig struct {
	// Path of the active audit file; rotated files are Path.1 (newest) to
	// Path.N (oldest). Its directory is created (mode 0700) when missing.
	Path string `yaml:"path"`
	// MaxSizeMB is the size in MiB at which the file is rotated. Default 100.
	MaxSizeMB int `yaml:"max_size_mb"`
	// MaxFiles is how many rotated files are kept besides the active one;
	// the oldest is deleted at rotation. Default 10.
	MaxFiles int `yaml:"max_files"`
	// Durability is buffered, write or sync. Default write.
	Durability Durability `yaml:"durability"`
}

// DefaultConfig returns the defaults: records on stdout, fail-closed, file
// settings ready for when a path is given.
func DefaultConfig() Config {
	return Config{
		Sink: SinkStdout,
		File: FileConfig{
			MaxSizeMB:  DefaultMaxSizeMB,
			MaxFiles:   DefaultMaxFiles,
			Durability: DurabilityWrite,
		},
		FailClosed: true,
	}
}

// SetDefaults resets c to DefaultConfig; the config decoder calls it when
// it creates an audit section behind a pointer.
func (c *Config) SetDefaults() { *c = DefaultConfig() }

// Validate reports every problem with c at once, as an errors.Join of
// *config.FieldError with paths relative to the audit section.
func (c Config) Validate() error {
	var p config.Problems
	switch c.Sink {
	case SinkStdout, SinkFile, SinkBoth:
	default:
		p.Addf("sink", "must be one of stdout, file, both (got %q)", c.Sink)
	}
	if c.usesFile() && c.File.Path == "" {
		p.Addf("file.path", "required when sink is %s", c.Sink)
	}
	if c.File.MaxSizeMB < 1 || c.File.MaxSizeMB > maxMaxSizeMB {
		p.Addf("file.max_size_mb", "must be between 1 and %d (got %d)", maxMaxSizeMB, c.File.MaxSizeMB)
	}
	if c.File.MaxFiles < 1 || c.File.MaxFiles > maxMaxFiles {
		p.Addf("file.max_files", "must be between 1 and %d (got %d)", maxMaxFiles, c.File.MaxFiles)
	}
	switch c.File.Durability {
	case DurabilityBuffered, DurabilityWrite, DurabilitySync:
	default:
		p.Addf("file.durability", "must be one of buffered, write, sync (got %q)", c.File.Durability)
	}
	return p.Err()
}

func (c Config) usesFile() bool { return c.Sink == SinkFile || c.Sink == SinkBoth }

func (c Config) usesStdout() bool { return c.Sink == SinkStdout || c.Sink == SinkBoth }
