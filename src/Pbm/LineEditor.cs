using System.Text;

namespace Pbm;

/// <summary>
/// A small line editor for a terminal, on <see cref="Console.ReadKey(bool)"/>: cursor keys, Home/End (Ctrl-A/E),
/// Backspace/Delete, history on Up/Down, Tab completion, Ctrl-C to clear the line (or leave when it is empty),
/// Ctrl-D to leave on an empty line. Lines wider than the terminal scroll sideways, so the prompt never wraps.
/// </summary>
internal sealed class LineEditor(TextWriter output) : ILineReader
{
    private const string ClearToEnd = "\x1b[K";
    private readonly TextWriter _output = output;
    private readonly List<string> _history = [];

    public Task<string?> ReadLineAsync(string prompt, Completion completion, CancellationToken ct)
    {
        var previous = Console.TreatControlCAsInput;
        // Ctrl-C arrives as a key while editing; while a command runs it is a signal that stops the command.
        Console.TreatControlCAsInput = true;
        try
        {
            return Task.FromResult(new Edit(this, prompt, completion).Run());
        }
        finally
        {
            Console.TreatControlCAsInput = previous;
        }
    }

    /// <summary>The state of one line being edited.</summary>
    private sealed class Edit(LineEditor editor, string prompt, Completion completion)
    {
        private readonly StringBuilder _line = new();
        private readonly TextWriter _out = editor._output;
        private readonly List<string> _history = editor._history;
        private int _cursor;
        private int _scroll;
        private int _historyIndex = editor._history.Count;
        private string _unsent = "";

        public string? Run()
        {
            Render();
            while (true)
            {
                var key = Console.ReadKey(intercept: true);
                var control = key.Modifiers.HasFlag(ConsoleModifiers.Control);
                switch (key.Key)
                {
                    case ConsoleKey.Enter:
                        Render(); // a pasted line has not been drawn yet
                        _out.WriteLine();
                        var text = _line.ToString().TrimEnd();
                        if (text.Length > 0 && (_history.Count == 0 || _history[^1] != text))
                            _history.Add(text);
                        return text;
                    case ConsoleKey.C when control || key.KeyChar == '\x03':
                        Render();
                        _out.WriteLine("^C");
                        if (_line.Length == 0)
                            return null;
                        SetLine("");
                        _historyIndex = _history.Count;
                        break;
                    case ConsoleKey.D when control || key.KeyChar == '\x04':
                        if (_line.Length == 0)
                        {
                            _out.WriteLine();
                            return null;
                        }
                        if (_cursor < _line.Length)
                            _line.Remove(_cursor, 1);
                        break;
                    case ConsoleKey.Backspace:
                        if (_cursor > 0)
                            _line.Remove(--_cursor, 1);
                        break;
                    case ConsoleKey.Delete:
                        if (_cursor < _line.Length)
                            _line.Remove(_cursor, 1);
                        break;
                    case ConsoleKey.LeftArrow:
                        _cursor = Math.Max(0, _cursor - 1);
                        break;
                    case ConsoleKey.RightArrow:
                        _cursor = Math.Min(_line.Length, _cursor + 1);
                        break;
                    case ConsoleKey.Home:
                    case ConsoleKey.A when control:
                        _cursor = 0;
                        break;
                    case ConsoleKey.End:
                    case ConsoleKey.E when control:
                        _cursor = _line.Length;
                        break;
                    case ConsoleKey.UpArrow:
                        if (_historyIndex > 0)
                        {
                            if (_historyIndex == _history.Count)
                                _unsent = _line.ToString();
                            SetLine(_history[--_historyIndex]);
                        }
                        break;
                    case ConsoleKey.DownArrow:
                        if (_historyIndex < _history.Count)
                        {
                            _historyIndex++;
                            SetLine(_historyIndex == _history.Count ? _unsent : _history[_historyIndex]);
                        }
                        break;
                    case ConsoleKey.Tab:
                        Complete();
                        break;
                    default:
                        if (key.KeyChar != '\0' && !char.IsControl(key.KeyChar))
                            _line.Insert(_cursor++, key.KeyChar);
                        break;
                }
                // A paste arrives as many keys: draw once they are all in.
                if (!Console.KeyAvailable)
                    Render();
            }
        }

        private void Complete()
        {
            var found = completion.Complete(_line.ToString(0, _cursor));
            if (found is null)
                return;
            _line.Remove(found.Start, _cursor - found.Start).Insert(found.Start, found.Replacement);
            _cursor = found.Start + found.Replacement.Length;
            if (found.Choices.Count > 1)
            {
                _out.WriteLine();
                _out.WriteLine(string.Join("  ", found.Choices));
            }
        }

        private void SetLine(string text)
        {
            _line.Clear().Append(text);
            _cursor = _line.Length;
        }

        private void Render()
        {
            var room = Math.Max(Width() - prompt.Length - 1, 1);
            if (_cursor < _scroll)
                _scroll = _cursor;
            else if (_cursor > _scroll + room)
                _scroll = _cursor - room;
            // Show as much of the line as fits when it got shorter again.
            _scroll = Math.Min(_scroll, Math.Max(0, _line.Length - room));
            _scroll = Math.Min(_scroll, _cursor);
            var visible = _line.ToString(_scroll, Math.Min(room, _line.Length - _scroll));
            var back = _scroll + visible.Length - _cursor;
            _out.Write($"\r{prompt}{visible}{ClearToEnd}{(back > 0 ? $"\x1b[{back}D" : "")}");
        }

        private static int Width()
        {
            try
            {
                return Console.WindowWidth > 0 ? Console.WindowWidth : 80;
            }
            catch (IOException)
            {
                return 80;
            }
        }
    }
}
