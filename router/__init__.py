"""Traffic routing between model versions (stable/canary split, mirroring,
automatic rollout). Empty until its issue lands; the folder exists so the
package layout is fixed from the start."""
