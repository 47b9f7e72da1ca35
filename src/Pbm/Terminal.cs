namespace Pbm;

/// <summary>Where pbm talks to its user: output, errors, typed lines, and Ctrl-C.</summary>
internal sealed record Terminal(TextWriter Out, TextWriter Err, ILineReader Input, Interrupts Interrupts);
