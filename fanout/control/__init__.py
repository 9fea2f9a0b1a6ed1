"""The control plane: compare-and-set plans on the subscriptions topic, routes files, the subscription
codec and its secret box, replays, dead-letter views, jobs and the 410/disable policy."""
