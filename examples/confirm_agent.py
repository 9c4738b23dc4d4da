"""An agent whose tool needs the user's approval: a (simulated) money transfer.

``requires_confirmation = True`` makes the server send ``agent.user_confirm``
and wait for ``user.response`` before the tool runs; a denial (or no answer
within --confirm-timeout) becomes a tool error the model sees.

    myagent-ws server examples/confirm_agent.py
    myagent-ws chat ws://127.0.0.1:8080      # then: /transfer to=alice amount=20
"""

from myagent import create_react_agent
from myagent.tool.base_tool import BaseTool, ToolResult

BALANCE = {"me": 100.0}


class Balance(BaseTool):
    name = "balance"
    description = "Show the account balance."
    parameters = {"type": "object", "properties": {}}

    async def execute(self) -> ToolResult:
        return ToolResult(output=f"Balance: {BALANCE['me']:.2f} EUR")


class Transfer(BaseTool):
    name = "transfer"
    description = "Transfer money to someone. The user must approve every transfer."
    parameters = {
        "type": "object",
        "properties": {
            "to": {"type": "string", "description": "Recipient."},
            "amount": {"type": "number", "exclusiveMinimum": 0, "description": "Amount in EUR."},
        },
        "required": ["to", "amount"],
    }
    requires_confirmation = True

    async def execute(self, to: str, amount: float) -> ToolResult:
        if amount > BALANCE["me"]:
            return ToolResult(error=f"insufficient funds: balance is {BALANCE['me']:.2f} EUR")
        BALANCE["me"] -= amount  # per sandbox process: a demo, not a bank
        return ToolResult(output=f"Sent {amount:.2f} EUR to {to}. New balance: {BALANCE['me']:.2f} EUR")


agent = create_react_agent(
    name="payments-assistant",
    tools=[Balance(), Transfer()],
    system_prompt="You help the user with payments. Always state amounts in EUR.",
    max_steps=4,
)
