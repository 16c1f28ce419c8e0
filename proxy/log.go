package proxy

import (
	"go.uber.org/zap"
)

// Operational log field names, kept in one place so dashboards can rely
// on them.
const (
	logDecisionID = "decision_id"
	logHost       = "host"
	logCode       = "code"
	logError      = "error"
)

func zapDecision(ex *exchange) zap.Field { return zap.String(logDecisionID, ex.rec.DecisionID) }

// zapErr logs an error's text. Pipeline errors never carry secrets (the
// packages that produce them guarantee it, and the canary tests check it).
func zapErr(err error) zap.Field { return zap.String(logError, err.Error()) }

const debugLevel = zap.DebugLevel

func zapCode(c Code) zap.Field { return zap.String(logCode, string(c)) }
