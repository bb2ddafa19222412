package gossip

import "fmt"

// fmtSscan parses the number of a test node name ("n12" -> 12).
func fmtSscan(name string, i *int) (int, error) { return fmt.Sscanf(name, "n%d", i) }
