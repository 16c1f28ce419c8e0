// Package audit is onbehalf's accountability trail: one canonical JSON record
// per request (and per refresh, connect, revoke, policy reload, start and
// stop), each naming the human the agent acted for, chained by hash so that
// an edited, deleted or reordered record is detected, and never carrying a
// secret.
//
// # Records and the chain
//
// An [Auditor] encodes a [Record] with zap's JSON encoder into one line and
// appends two chain fields: seq (1, 2, 3, … within a chain) and prev_hash,
// the hex SHA-256 of the previous record's exact line (without its trailing
// newline). The first record of a chain has seq 1 and a prev_hash of 64
// zeros. A file sink continues the chain of the file it reopens, and
// rotation (audit.log → audit.log.1 → …) does not break it: the first record
// of a new file links to the last record of the previous one. [Verify]
// checks a chain and names the first record where it breaks.
//
// A plain hash chain is tamper-evident, not tamper-proof: someone who can
// rewrite the whole file from a point onwards can recompute every hash after
// it. The chain catches edits of single records, deletions, reorderings and
// truncated records; to catch a rewrite or a cut at the end of the file,
// compare [Report.LastHash] and [Report.LastSeq] with a copy kept elsewhere
// (a log shipper, the stop record in the operational log).
//
// # Failure
//
// zap's Logger swallows write errors (it reports them to an error output and
// carries on), which would hide a failing audit disk. The Auditor therefore
// uses only zap's encoder and writes the line to its sinks itself, so
// [Auditor.Write] learns synchronously whether any sink accepted the record.
// When none did it returns an error wrapping [ErrUnavailable]; with
// fail_closed (the default) the proxy must then refuse to inject.
//
// [Auditor.Submit] is for records nobody has to wait for, such as the
// canonical record of a request whose inject record was already written:
// it returns once the record is encoded and queued. The record goes out
// with the next batch, which a Write leads when one comes within 2 ms and
// a timer leads otherwise; a submitted record no sink accepts is logged and
// reported to Options.Lost, and Close writes whatever was submitted before
// it.
//
// # Redaction
//
// [RedactURL], [RedactQuery], [RedactPath], [Headers] and [Redactor] are the
// redaction every logger in the project uses: query parameters and headers
// that carry credentials are replaced by REDACTED. Record paths always pass
// through [RedactPath] when encoded, so a caller cannot forget.
//
// # Concurrency
//
// An Auditor, a [Fingerprinter] and a [Redactor] are safe for concurrent
// use. Records are written by group commit: the chain is a total order,
// encoding (the larger part of the work) happens before the lock is taken,
// and records queued while one batch is being written go out together in
// the next, in one write(2). A Record must not be modified while Write or
// Submit runs on it.
package audit
