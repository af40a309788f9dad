"""`blendin eval`: run decoding strategies on the same problems, score them
(GSM8K accuracy, XSTest refusal, clean endings), and write a results folder
with a summary table, diagnostics in words and plots."""
