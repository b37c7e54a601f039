"""The methods' steps as plain functions: warm-up rows, variants, scoring (utilities), pair selection, SFT/DPO updates, the controller, deliberation and discussion, teachers, evaluation."""
