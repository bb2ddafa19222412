//go:build nocaucus

package raftbench

import "errors"

// Built with -tags nocaucus (while the caucus core does not compile), only etcd runs.
func newCaucusCluster(Options) (cluster, error) {
	return nil, errors.New("raftbench: built with -tags nocaucus")
}
