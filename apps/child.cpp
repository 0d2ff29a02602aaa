// Child processes of seqlab itself (apps/child.h).
#include "apps/child.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "apps/trainer.h"
#include "core/error.h"

extern char** environ;

namespace seqlab::app {

bool ChildOutcome::exited_ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::string ChildOutcome::describe() const {
  return WIFEXITED(status) ? str("exit code ", WEXITSTATUS(status)) : str("signal ", WTERMSIG(status));
}

ChildOutcome run_child(const std::vector<std::string>& args, const std::vector<std::string>* env,
                       bool capture_stdout) {
  SEQLAB_CHECK(!args.empty(), "run_child: no program");
  std::vector<std::string> arg_copy = args;
  std::vector<char*> argv;
  for (auto& a : arg_copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_copy;
  std::vector<char*> envp;
  if (env) {
    env_copy = *env;
    for (auto& e : env_copy) envp.push_back(e.data());
    envp.push_back(nullptr);
  }
  int fds[2] = {-1, -1};
  if (capture_stdout) SEQLAB_CHECK(pipe(fds) == 0, "cannot start ", args[0], ": pipe() failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (capture_stdout) {
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
  } else {
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0].c_str(), &actions, nullptr, argv.data(), env ? envp.data() : environ);
  posix_spawn_file_actions_destroy(&actions);
  ChildOutcome o;
  // A stop request to this process (SIGINT or SIGTERM sent to it alone: `kill PID`, not the
  // terminal's Ctrl-C, which reaches the whole process group) is passed on as SIGUSR1, which a
  // seqlab child takes as the same request, any number of times: training writes checkpoint-last.h5
  // after its current step and exits 130. Polled every 50 ms, from whichever thread waits here
  // (compare --jobs waits in worker threads, which a signal need not interrupt).
  bool forwarded = false;
  auto forward_stop = [&] {
    if (forwarded || rc != 0 || !stop_requested()) return;
    ::kill(pid, SIGUSR1);
    forwarded = true;
  };
  if (capture_stdout) {
    close(fds[1]);
    if (rc == 0) {
      char buf[4096];
      for (;;) {
        forward_stop();
        pollfd p{fds[0], POLLIN, 0};
        const int ready = poll(&p, 1, 50);
        if (ready == 0 || (ready < 0 && errno == EINTR)) continue;
        const ssize_t n = read(fds[0], buf, sizeof buf);
        if (n > 0) o.out.append(buf, static_cast<size_t>(n));
        else if (!(n < 0 && errno == EINTR)) break;  // end of the child's output, or an error
      }
    }
    close(fds[0]);
  }
  SEQLAB_CHECK(rc == 0, "cannot start ", args[0], ": ", std::strerror(rc));
  for (;;) {
    forward_stop();
    const pid_t r = wait4(pid, &o.status, WNOHANG, &o.usage);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) throw Error(str("waiting for ", args[0], ": ", std::strerror(errno)));
    if (r == 0) usleep(50000);
  }
  return o;
}

}  // namespace seqlab::app
