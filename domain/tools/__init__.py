"""Tool middleware: the policies a catalog or an agent author puts around tool calls, and
the decisions they record (`AgentRun.ToolDecisionMade`)."""
