"""What weightio says about archives: inspect, diff, stats, explain, non-finite values."""
