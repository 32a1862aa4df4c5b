"""Pure code: models, enums, validation, state machines, schedule math. Imports nothing of ours."""
