package main

import "time"

// childEnv marks the re-executed helper that sets up the mount namespace
// and drops privileges before exec'ing the user's command.
const childEnv = "TORGATE_EXEC_CHILD"

// defaultExecWait is how long "torgate exec" waits for Tor by default
// (--wait): a first bootstrap on a slow network takes minutes, and a
// stalled one says why long before (the bootstrap stall warning).
const defaultExecWait = 5 * time.Minute
