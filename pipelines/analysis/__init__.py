"""What an index costs and how good it is: report, plan, costs, fidelity, calibrate."""
