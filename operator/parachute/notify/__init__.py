"""Telling the incident channel: a Slack-compatible webhook and a CloudEvents webhook."""
